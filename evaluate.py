#!/usr/bin/env python
"""Evaluate trained runs together: predictive, metrics, ROC curves, report.

    python evaluate.py runs/vogn runs/adam runs/mcdropout --ood holdout:5-9 \\
        --out report/
    mpiexec -n 4 python evaluate.py runs/vogn --mc-samples 32 --out report/

Under mpiexec the Monte Carlo samples are split over the processes, with the
same result as one process; rank 0 writes the report.
"""
import argparse
import sys

import chainer_vogn  # NOQA: makes chainer importable on every stack
from chainer_vogn import datasets
from chainer_vogn import errors
from chainer_vogn import evaluation
from chainer_vogn import mpi
from chainer_vogn import ood
from chainer_vogn import run_options
from chainer_vogn.run_options import at_least


def _ood(text):
    try:
        ood.parse_ood(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


def build_parser():
    p = run_options.ArgumentParser(
        prog='evaluate.py',
        description='Evaluate train.py runs: VOGN with T weight samples, MC '
                    'dropout with T dropout passes, Adam/SGD with one pass. '
                    'Writes report.json/csv/md, ROC, reliability, entropy and '
                    'gallery figures and predictions.npz into --out.')
    p.add_argument('runs', nargs='+', metavar='RUN',
                   help='--out folders of train.py runs (config.json and '
                        'model.npz)')
    p.add_argument('--out', default='report', help='output folder')
    p.add_argument('--ood', type=_ood, default='none',
                   help='out-of-distribution set: none, {} or holdout:A-B '
                        '(the test examples of classes A..B of the run\'s own '
                        'data set, held out with train.py --classes)'.format(
                            ', '.join(datasets.DATASETS)))
    p.add_argument('--mc-samples', type=at_least(1, 'T (--mc-samples)'),
                   default=10, metavar='T',
                   help='Monte Carlo samples of VOGN and MC dropout runs '
                        '(Adam/SGD always use 1)')
    p.add_argument('--ece-bins', type=at_least(1, '--ece-bins'), default=15,
                   help='equal-width confidence bins of the expected '
                        'calibration error and the reliability diagram')
    p.add_argument('--data-dir', default=None,
                   help='data folder (default: the one each run used)')
    p.add_argument('--device', type=int, default=-1,
                   help='-1: CPU; >= 0: GPU, rank r uses device + its rank '
                        'on the node')
    p.add_argument('--seed', type=at_least(0, '--seed'), default=0,
                   help='sample t uses the seed (seed, t)')
    p.add_argument('--batchsize', type=at_least(1, '--batchsize'),
                   default=256, help='examples per forward pass')
    p.add_argument('--names', default=None, metavar='A,B,...',
                   help='names of the runs in the report (default: the '
                        'folder names)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    mpi.require_mpi('evaluate.py')
    with errors.exit_cleanly('evaluate.py'):
        evaluation.evaluate(args)


if __name__ == '__main__':
    sys.exit(main())
