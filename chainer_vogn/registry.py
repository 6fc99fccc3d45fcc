"""The one registry of optimizers train.py offers, by --optimizer name.

Each entry says how to build the optimizer, how its runs are sampled at
prediction time, its label and its defaults, and for an optimizer that
learns a posterior, its class, whose declared hyperparameters become
train.py's options (see docs/adding_an_optimizer.md); nothing else in the
package lists optimizers.
"""
import collections

import chainer
from chainer.optimizers import adam as adam_module
from chainer.optimizers import momentum_sgd as momentum_sgd_module

from chainer_vogn.distributed import DistributedIVON
from chainer_vogn.distributed import DistributedVOGN


class MeanGradients(object):
    """Optimizer hook: average gradients over all ranks before the update.

    The baselines' data parallelism, without ChainerMN's multi-node
    optimizer wrapper, which skips the first update.
    """

    name = 'MeanGradients'
    call_for_each_param = False
    timing = 'pre'

    def __init__(self, comm):
        self.comm = comm

    def __call__(self, optimizer):
        if self.comm.size > 1:
            self.comm.multi_node_mean_grad(optimizer.target)


def _data_parallel(optimizer, model, args, comm):
    """Set ``optimizer`` up on ``model`` as a data-parallel baseline: rank 0's
    weights everywhere, gradients averaged over the ranks, weight decay."""
    optimizer.setup(model)
    comm.bcast_data(model)
    optimizer.add_hook(MeanGradients(comm))
    if args.weight_decay > 0:
        optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(
            args.weight_decay))
    return optimizer


def _build_posterior(cls):
    """The builder of ``cls``, the distributed form of a
    :class:`~chainer_vogn.posterior_optimizer.PosteriorOptimizer`: its
    declared hyperparameters take the options of the same names, its
    layout --samples, --mc and --seed."""
    def build(args, comm, model, dataset_size):
        hyperparams = {h.name: getattr(args, h.name)
                       for h in cls.hyperparameters}
        return cls(comm, dataset_size, num_sample_groups=args.samples,
                   num_samples=args.mc, seed=args.seed,
                   **hyperparams).setup(model)
    return build


def _build_adam(args, comm, model, dataset_size):
    return _data_parallel(chainer.optimizers.Adam(alpha=args.lr), model,
                          args, comm)


def _build_momentum_sgd(args, comm, model, dataset_size):
    return _data_parallel(chainer.optimizers.MomentumSGD(
        lr=args.lr, momentum=args.momentum), model, args, comm)


#: What the code needs to know about one optimizer:
#:
#: * ``build(args, comm, model, dataset_size)`` returns the optimizer set up
#:   on ``model`` (initialised parameters) for the processes of ``comm``;
#: * ``sampling`` says how evaluation draws the predictive's samples:
#:   'weights' (from the posterior the optimizer learnt), 'dropout' (dropout
#:   on, mean weights) or 'point' (one deterministic pass);
#: * ``label`` names it in reports; ``default_lr`` and ``default_dropout``
#:   apply when --lr and --dropout are not given; ``lr_attr`` is the
#:   hyperparameter that --lr-milestones decays;
#: * ``posterior``: for an optimizer that learns a posterior, its class
#:   (a :class:`~chainer_vogn.posterior_optimizer.PosteriorOptimizer`), whose
#:   declared hyperparameters become options; else None.
OptimizerSpec = collections.namedtuple(
    'OptimizerSpec', ['name', 'label', 'build', 'sampling', 'default_lr',
                      'default_dropout', 'lr_attr', 'posterior'])


def posterior_spec(name, cls, default_lr):
    """The entry of an optimizer that learns a posterior; ``cls`` is its
    distributed form (``cls(comm, dataset_size, num_sample_groups=S,
    num_samples=K, seed=seed, **hyperparams)``).  ``default_lr`` None leaves
    lr to ``cls``."""
    return OptimizerSpec(name, cls.label, _build_posterior(cls), 'weights',
                         default_lr, 0.0, 'lr', cls)


#: The optimizers train.py offers, by --optimizer name.
OPTIMIZERS = collections.OrderedDict((spec.name, spec) for spec in (
    # Both scale their lr with the data shards (distributed.scaled_lr).
    posterior_spec('vogn', DistributedVOGN, None),
    posterior_spec('ivon', DistributedIVON, None),
    OptimizerSpec('adam', 'Adam', _build_adam, 'point',
                  adam_module._default_hyperparam.alpha, 0.0, 'alpha', None),
    # MC dropout is Adam training with dropout, sampled with dropout on.
    OptimizerSpec('mcdropout', 'MC dropout', _build_adam, 'dropout',
                  adam_module._default_hyperparam.alpha, 0.5, 'alpha', None),
    OptimizerSpec('sgd', 'SGD', _build_momentum_sgd, 'point',
                  momentum_sgd_module._default_hyperparam.lr, 0.0, 'lr',
                  None),
))

#: The ways a predictive is sampled.
SAMPLINGS = ('weights', 'dropout', 'point')


def optimizer_spec(name):
    """The :data:`OPTIMIZERS` entry of ``name``; ValueError if unknown."""
    if name not in OPTIMIZERS:
        raise ValueError('unknown optimizer {!r}; expected one of {}'.format(
            name, ', '.join(OPTIMIZERS)))
    return OPTIMIZERS[name]


def declared_hyperparameters():
    """{option name: [(optimizer name, Hyperparameter), ...]} of what the
    registered posterior optimizers declare, in registry order."""
    found = collections.OrderedDict()
    for spec in OPTIMIZERS.values():
        for h in spec.posterior.hyperparameters if spec.posterior else ():
            found.setdefault(h.name, []).append((spec.name, h))
    return found
