"""Command-line options of train.py, readable from a JSON or YAML file too.

Options given on the command line win over those in ``--config FILE``, which
win over the defaults.  The file's keys are option names, with dashes or
underscores (``prior-precision`` or ``prior_precision``).
"""
import argparse
import json
import os

from chainer_vogn.datasets import DATASETS
from chainer_vogn.models import ARCHS

OPTIMIZERS = ('vogn', 'adam', 'mcdropout', 'sgd')
COMMUNICATORS = ('naive', 'flat', 'pure_nccl')

#: Learning rate when --lr is not given: VOGN's and Adam's step sizes are
#: relative to a preconditioner, SGD's is not.
DEFAULT_LR = {'vogn': 1e-3, 'adam': 1e-3, 'mcdropout': 1e-3, 'sgd': 1e-2}
DEFAULT_DROPOUT = {'mcdropout': 0.5}


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


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError('must be >= 1, got {}'.format(value))
    return value


def build_parser():
    p = argparse.ArgumentParser(
        description='Train a classifier with VOGN (or a baseline) on one or '
                    'many processes: mpiexec -n P python train.py --samples S '
                    'splits the P processes into S Monte Carlo sample groups '
                    'of P/S data shards each.')
    p.add_argument('--config', metavar='FILE',
                   help='JSON or YAML file of options (command line wins)')
    g = p.add_argument_group('model and data')
    g.add_argument('--optimizer', choices=OPTIMIZERS, default='vogn')
    g.add_argument('--arch', choices=ARCHS, default='mlp')
    g.add_argument('--dataset', choices=DATASETS, default='digits')
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
    g.add_argument('--samples', type=_positive_int, default=1, metavar='S',
                   help='sample groups across processes (VOGN only); the '
                        'number of processes must be a multiple of S')
    g.add_argument('--mc', type=_positive_int, default=1, metavar='K',
                   help='Monte Carlo samples per process per step (VOGN)')
    g.add_argument('--batchsize', type=_positive_int, default=32,
                   help='minibatch size PER PROCESS (ChainerMN convention)')
    g.add_argument('--epochs', type=_positive_int, default=10)
    g.add_argument('--lr', type=float, default=None,
                   help='learning rate (default: {})'.format(', '.join(
                       '{} {}'.format(k, v) for k, v in DEFAULT_LR.items())))
    g.add_argument('--lr-milestones', type=_milestones, default=[],
                   metavar='E1,E2', help='epochs at which lr is multiplied '
                                         'by --lr-decay')
    g.add_argument('--lr-decay', type=float, default=0.1)
    g.add_argument('--weight-decay', type=float, default=0.0,
                   help='L2 weight decay of the baselines')
    g.add_argument('--momentum', type=float, default=0.9,
                   help='momentum of sgd')
    g.add_argument('--seed', type=int, default=0)
    g = p.add_argument_group('VOGN (see docs/algorithm.md)')
    g.add_argument('--beta1', type=float, default=0.9)
    g.add_argument('--beta2', type=float, default=0.999)
    g.add_argument('--prior-precision', type=float, default=1.0)
    g.add_argument('--tau', type=float, default=1.0)
    g.add_argument('--damping', type=float, default=1e-3)
    g.add_argument('--init-precision', type=float, default=None)
    g.add_argument('--aug-factor', type=float, default=1.0,
                   help='data augmentation factor rho: N_eff = rho * N')
    g.add_argument('--no-bias-correction', dest='bias_correction',
                   action='store_false')
    g.add_argument('--tau-warmup-steps', type=int, default=0)
    g.add_argument('--tau-init', type=float, default=0.1)
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
    g.add_argument('--snapshot-interval', type=_positive_int, default=1,
                   metavar='EPOCHS')
    g.add_argument('--eval-batchsize', type=_positive_int, default=256)
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
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    if args.dropout is None:
        args.dropout = DEFAULT_DROPOUT.get(args.optimizer, 0.0)
    if args.optimizer != 'vogn' and args.samples != 1:
        parser.error('--samples {} applies to vogn only: the baselines are '
                     'plain data parallel (use --samples 1)'.format(
                         args.samples))
    if args.optimizer == 'mcdropout' and args.dropout <= 0:
        parser.error('--optimizer mcdropout needs --dropout > 0')
    return args
