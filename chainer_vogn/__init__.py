"""chainer-vogn: Bayesian deep learning with VOGN on Chainer and ChainerMN."""
from chainer_vogn import compat  # NOQA: must run before anything imports chainer
