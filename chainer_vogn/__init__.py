"""chainer-vogn: Bayesian deep learning with VOGN on Chainer and ChainerMN."""
from chainer_vogn import compat  # NOQA: must run before anything imports chainer
from chainer_vogn.curvature import SquaredGradientHook  # NOQA
from chainer_vogn.ivon import IVON  # NOQA
from chainer_vogn.ivon import IVONRule  # NOQA
from chainer_vogn.optimizer import VOGN  # NOQA
from chainer_vogn.optimizer import VOGNRule  # NOQA
from chainer_vogn.posterior import load_posterior  # NOQA
from chainer_vogn.posterior import save_posterior  # NOQA
from chainer_vogn.distributed import DistributedIVON  # NOQA
from chainer_vogn.distributed import DistributedVOGN  # NOQA
from chainer_vogn.distributed import Layout  # NOQA
from chainer_vogn.run_folder import predict  # NOQA
