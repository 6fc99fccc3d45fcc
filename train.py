#!/usr/bin/env python
"""Train with VOGN or a baseline, on one process or many.

    python train.py --dataset digits --arch mlp --epochs 5
    mpiexec -n 16 python train.py --config configs/cifar10_lenet5_vogn.yaml --samples 4

See README.md for every option and the paper's settings in configs/.
"""
import sys

import chainer_vogn  # NOQA: makes chainer importable on every stack
from chainer_vogn import errors
from chainer_vogn import mpi
from chainer_vogn import run_options
from chainer_vogn import training


def main(argv=None):
    args = run_options.parse_args(argv)
    mpi.require_mpi('train.py')
    with errors.exit_cleanly('train.py'):
        training.run(args)


if __name__ == '__main__':
    sys.exit(main())
