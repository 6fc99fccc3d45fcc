"""An experiment: its options, its optimizer, its data, model and device.

Everything that turns a run's options into the objects of a run lives here,
so that training (:mod:`chainer_vogn.training`) and evaluation
(:mod:`chainer_vogn.evaluation`, :mod:`chainer_vogn.inference`) build them the
same way:

* :data:`OPTIMIZERS`, the one registry of optimizers: how to build each, how
  its runs are sampled at prediction time, its label and its defaults (see
  docs/adding_an_optimizer.md);
* the options of train.py (:func:`parse_args`), from the command line or a
  JSON/YAML ``--config`` file;
* :func:`load_data`, :func:`build_model` and :func:`select_device`;
* :class:`RunError` and :func:`fail`, the exit policy of train.py and
  evaluate.py.
"""
import argparse
import collections
import json
import os
import platform
import sys

import numpy

import chainer
import chainer.links as L
from chainer.optimizers import adam as adam_module
from chainer.optimizers import momentum_sgd as momentum_sgd_module

from chainer_vogn import datasets
from chainer_vogn import models
from chainer_vogn import optimizer as vogn_module
from chainer_vogn.distributed import DistributedVOGN
from chainer_vogn.files import atomic_write

#: Conv nets are built for CIFAR-sized inputs; smaller images are upsampled.
CONV_IMAGE_SIZE = 32

COMMUNICATORS = ('naive', 'flat', 'pure_nccl')


# Errors and the exit policy

class RunError(Exception):
    """A failure to report in one line, then end the job on every rank."""


def fail(message):
    """Print ``message`` and end the job: every rank, if there are several.

    A rank that merely exited would leave the others blocked in their next
    collective call, so a multi-process job is aborted through MPI.
    """
    from mpi4py import MPI
    world = MPI.COMM_WORLD
    prefix = '[rank {}] '.format(world.rank) if world.size > 1 else ''
    sys.stderr.write(prefix + message + '\n')
    sys.stderr.flush()
    if world.size > 1:
        world.Abort(1)
    sys.exit(1)


def write_json(path, data):
    """Write ``data`` to ``path`` as indented JSON, atomically."""
    atomic_write(path, lambda f: json.dump(data, f, indent=2, sort_keys=True))


def versions():
    """The versions of Python and the libraries that produce a result."""
    info = {'python': platform.python_version(), 'numpy': numpy.__version__,
            'chainer': chainer.__version__}
    try:
        import cupy
        info['cupy'] = cupy.__version__
    except ImportError:
        pass
    return info


# The optimizers

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
    OptimizerSpec('vogn', 'VOGN', _build_vogn, 'weights',
                  vogn_module._default_hyperparam.lr, 0.0, 'lr'),
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


# Data, model and device

def image_size_for(args):
    """The image size the run's model takes, when it is not the data set's
    own (conv nets take at least CIFAR's 32 x 32); else None."""
    native = {'digits': 8, 'mnist': 28}.get(args.dataset, 32)
    if args.arch != 'mlp' and native < CONV_IMAGE_SIZE:
        return CONV_IMAGE_SIZE
    return None


def load_data(args):
    """(train, test, info) as the run with options ``args`` sees them.

    evaluate.py calls this with a run's recorded options, so its test set
    goes through exactly the same classes, size and standardisation.
    """
    train, test, info = datasets.get_dataset(
        args.dataset, data_dir=args.data_dir,
        allow_download=args.allow_download, image_size=image_size_for(args))
    if args.classes:
        classes = datasets.parse_class_range(args.classes)
        if max(classes) >= info['n_classes']:
            raise ValueError('--classes {}: {} has only classes 0-{}'.format(
                args.classes, args.dataset, info['n_classes'] - 1))
        train = datasets.select_classes(train, classes, relabel=True)
        test = datasets.select_classes(test, classes, relabel=True)
        info = dict(info, n_classes=len(classes), classes=classes,
                    n_train=len(train), n_test=len(test))
    return train, test, info


def build_model(args, info):
    """The run's ``L.Classifier`` for data described by ``info``."""
    predictor = models.get_model(args.arch, info['n_classes'],
                                 in_channels=info['in_channels'],
                                 dropout=args.dropout)
    return L.Classifier(predictor)


def select_device(device, mpi_comm=None):
    """The CPU (``device`` < 0), or GPU ``device`` + the rank's index on its
    node among the processes of ``mpi_comm`` (an mpi4py communicator)."""
    if device < 0:
        return chainer.get_device('@numpy')
    local = 0
    if mpi_comm is not None:
        from mpi4py import MPI
        local = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED).rank
    try:
        gpu = chainer.get_device('@cupy:{}'.format(device + local))
        gpu.use()
    except RuntimeError as e:
        raise RunError('--device {}: no usable GPU {} ({}); install CuPy '
                       'or pass --device -1 for the CPU'.format(
                           device, device + local, e))
    return gpu


# Options of train.py

def _milestones(text):
    try:
        values = [int(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            'expected comma-separated epochs such as 80,120; got {!r}'.format(
                text))
    if values != sorted(values) or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            'milestones must be increasing positive epochs; got {!r}'.format(
                text))
    return values


def at_least(minimum, what=None):
    """An argparse type: an integer >= ``minimum`` (``what`` names it)."""
    def parse(text):
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError('{}must be >= {}, got {}'.format(
                what + ' ' if what else '', minimum, value))
        return value
    parse.__name__ = 'integer'  # argparse: "invalid integer value: '1.5'"
    return parse


def build_parser():
    vogn = vogn_module._default_hyperparam
    p = argparse.ArgumentParser(
        description='Train a classifier with VOGN (or a baseline) on one or '
                    'many processes: mpiexec -n P python train.py --samples S '
                    'splits the P processes into S Monte Carlo sample groups '
                    'of P/S data shards each.')
    p.add_argument('--config', metavar='FILE',
                   help='JSON or YAML file of options (command line wins)')
    g = p.add_argument_group('model and data')
    g.add_argument('--optimizer', choices=tuple(OPTIMIZERS), default='vogn')
    g.add_argument('--arch', choices=models.ARCHS, default='mlp')
    g.add_argument('--dataset', choices=datasets.DATASETS, default='digits')
    g.add_argument('--data-dir', default=None,
                   help='folder with the official dataset files '
                        '(default: ./data)')
    g.add_argument('--classes', default=None, metavar='LIST',
                   help='train on these classes only, e.g. 0-4 (relabelled '
                        '0..k-1), holding the rest out as out-of-distribution '
                        'data for evaluate.py --ood holdout:5-9')
    g.add_argument('--allow-download', action='store_true',
                   help='let Chainer download MNIST when it is not cached')
    g.add_argument('--dropout', type=float, default=None,
                   help='dropout rate before fully connected layers '
                        '(default 0.5 for mcdropout, else 0)')
    g.add_argument('--augment', action='store_true',
                   help='random crop (pad 4) and horizontal flip')
    g = p.add_argument_group('training')
    g.add_argument('--samples', type=at_least(1), default=1, metavar='S',
                   help='sample groups across processes (VOGN only); the '
                        'number of processes must be a multiple of S')
    g.add_argument('--mc', type=at_least(1), default=1, metavar='K',
                   help='Monte Carlo samples per process per step (VOGN)')
    g.add_argument('--batchsize', type=at_least(1), default=32,
                   help='minibatch size PER PROCESS (ChainerMN convention)')
    g.add_argument('--epochs', type=at_least(1), default=10)
    g.add_argument('--lr', type=float, default=None,
                   help='learning rate (default: {})'.format(', '.join(
                       '{} {}'.format(name, spec.default_lr)
                       for name, spec in OPTIMIZERS.items())))
    g.add_argument('--lr-milestones', type=_milestones, default=[],
                   metavar='E1,E2', help='epochs at which lr is multiplied '
                                         'by --lr-decay')
    g.add_argument('--lr-decay', type=float, default=0.1)
    g.add_argument('--weight-decay', type=float, default=0.0,
                   help='L2 weight decay of the baselines')
    g.add_argument('--momentum', type=float,
                   default=momentum_sgd_module._default_hyperparam.momentum,
                   help='momentum of sgd')
    g.add_argument('--seed', type=int, default=0)
    g = p.add_argument_group('VOGN (see docs/algorithm.md)')
    g.add_argument('--beta1', type=float, default=vogn.beta1)
    g.add_argument('--beta2', type=float, default=vogn.beta2)
    g.add_argument('--prior-precision', type=float,
                   default=vogn.prior_precision)
    g.add_argument('--tau', type=float, default=vogn.tau)
    g.add_argument('--damping', type=float, default=vogn.damping)
    g.add_argument('--init-precision', type=float,
                   default=vogn.init_precision)
    g.add_argument('--aug-factor', type=float, default=vogn.aug_factor,
                   help='data augmentation factor rho: N_eff = rho * N')
    g.add_argument('--no-bias-correction', dest='bias_correction',
                   action='store_false')
    g.add_argument('--tau-warmup-steps', type=int,
                   default=vogn.tau_warmup_steps)
    g.add_argument('--tau-init', type=float, default=vogn.tau_init)
    g = p.add_argument_group('devices, output and resuming')
    g.add_argument('--device', type=int, default=-1,
                   help='-1: CPU; >= 0: GPUs, rank r uses GPU '
                        'device + intra-node rank')
    g.add_argument('--communicator', choices=COMMUNICATORS, default='naive',
                   help='ChainerMN communicator (pure_nccl for GPUs)')
    g.add_argument('--out', default='result', help='output folder')
    g.add_argument('--resume', action='store_true',
                   help='continue from the newest snapshot in --out (start '
                        'afresh when there is none)')
    g.add_argument('--snapshot-interval', type=at_least(1), default=1,
                   metavar='EPOCHS')
    g.add_argument('--eval-batchsize', type=at_least(1), default=256)
    g.add_argument('--no-progress', dest='progress', action='store_false',
                   help='no progress bar (for batch jobs)')
    return p


def read_config(path):
    """The options in a JSON (.json) or YAML (.yaml/.yml) file, as a dict."""
    if not os.path.exists(path):
        raise FileNotFoundError('--config {}: no such file'.format(path))
    with open(path) as f:
        if path.endswith(('.yaml', '.yml')):
            import yaml
            data = yaml.safe_load(f)
        else:
            data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError('--config {}: expected a mapping of option names to '
                         'values'.format(path))
    return {key.replace('-', '_'): value for key, value in data.items()}


def parse_args(argv=None):
    """The options of train.py: command line over --config file over
    defaults, with the defaults of the chosen optimizer filled in."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        options = read_config(args.config)
        known = {a.dest for a in parser._actions} - {'help', 'config'}
        unknown = sorted(set(options) - known)
        if unknown:
            parser.error('--config {}: unknown options {}; valid ones are '
                         '{}'.format(args.config, unknown, sorted(known)))
        parser.set_defaults(**options)
        args = parser.parse_args(argv)
        # Values from the file skip argparse's type conversion.
        if isinstance(args.lr_milestones, str):
            args.lr_milestones = _milestones(args.lr_milestones)
        for action in parser._actions:
            value = getattr(args, action.dest, None)
            if action.choices and value is not None and \
                    value not in action.choices:
                parser.error('--config {}: {} = {!r} is not one of {}'.format(
                    args.config, action.dest, value, action.choices))
    spec = OPTIMIZERS[args.optimizer]
    if args.lr is None:
        args.lr = spec.default_lr
    if args.dropout is None:
        args.dropout = spec.default_dropout
    if args.optimizer != 'vogn' and args.samples != 1:
        parser.error('--samples {} applies to vogn only: the baselines are '
                     'plain data parallel (use --samples 1)'.format(
                         args.samples))
    if spec.sampling == 'dropout' and args.dropout <= 0:
        parser.error('--optimizer {} needs --dropout > 0'.format(
            args.optimizer))
    return args
