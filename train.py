#!/usr/bin/env python
"""Train with VOGN or a baseline, on one process or many.

    python train.py --dataset digits --arch mlp --epochs 5
    mpiexec -n 16 python train.py --config configs/cifar10_lenet5_vogn.yaml --samples 4

See README.md for every option and the paper's settings in configs/; the
command is :func:`chainer_vogn.commands.train_main`.
"""
import sys

try:
    import chainer_vogn  # NOQA: makes chainer importable on every stack
    from chainer_vogn.commands import train_main
except KeyboardInterrupt:  # Ctrl-C while the libraries load
    sys.stderr.write('train.py: interrupted\n')
    sys.exit(130)


if __name__ == '__main__':
    sys.exit(train_main())
