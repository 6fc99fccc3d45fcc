"""The one registry of optimizers train.py offers, by --optimizer name.

Each entry says how to build the optimizer, how its runs are sampled at
prediction time, its label and its defaults (see
docs/adding_an_optimizer.md); nothing else in the package lists optimizers.
"""
import collections

import chainer
from chainer.optimizers import adam as adam_module
from chainer.optimizers import momentum_sgd as momentum_sgd_module

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


def _build_vogn(args, comm, model, dataset_size):
    optimizer = DistributedVOGN(
        comm, dataset_size, num_sample_groups=args.samples, lr=args.lr,
        beta1=args.beta1, beta2=args.beta2,
        prior_precision=args.prior_precision, tau=args.tau,
        damping=args.damping, init_precision=args.init_precision,
        num_samples=args.mc, aug_factor=args.aug_factor,
        bias_correction=args.bias_correction,
        tau_warmup_steps=args.tau_warmup_steps, tau_init=args.tau_init,
        seed=args.seed)
    return optimizer.setup(model)


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
#:   'weights' (from the posterior the optimizer learnt; it has
#:   ``dataset_size`` and model.npz gets its sigma), 'dropout' (dropout on,
#:   mean weights) or 'point' (one deterministic pass);
#: * ``label`` names it in reports; ``default_lr`` and ``default_dropout``
#:   apply when --lr and --dropout are not given; ``lr_attr`` is the
#:   hyperparameter that --lr-milestones decays.
OptimizerSpec = collections.namedtuple(
    'OptimizerSpec', ['name', 'label', 'build', 'sampling', 'default_lr',
                      'default_dropout', 'lr_attr'])

#: The optimizers train.py offers, by --optimizer name.
OPTIMIZERS = collections.OrderedDict((spec.name, spec) for spec in (
    # None: DistributedVOGN scales its lr with the data shards (scaled_lr).
    OptimizerSpec('vogn', 'VOGN', _build_vogn, 'weights', None, 0.0, 'lr'),
    OptimizerSpec('adam', 'Adam', _build_adam, 'point',
                  adam_module._default_hyperparam.alpha, 0.0, 'alpha'),
    # MC dropout is Adam training with dropout, sampled with dropout on.
    OptimizerSpec('mcdropout', 'MC dropout', _build_adam, 'dropout',
                  adam_module._default_hyperparam.alpha, 0.5, 'alpha'),
    OptimizerSpec('sgd', 'SGD', _build_momentum_sgd, 'point',
                  momentum_sgd_module._default_hyperparam.lr, 0.0, 'lr'),
))

#: The ways a predictive is sampled.
SAMPLINGS = ('weights', 'dropout', 'point')


def optimizer_spec(name):
    """The :data:`OPTIMIZERS` entry of ``name``; ValueError if unknown."""
    if name not in OPTIMIZERS:
        raise ValueError('unknown optimizer {!r}; expected one of {}'.format(
            name, ', '.join(OPTIMIZERS)))
    return OPTIMIZERS[name]
