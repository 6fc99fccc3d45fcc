#!/usr/bin/env python
"""Evaluate trained runs together: predictive, metrics, ROC curves, report.

    python evaluate.py runs/vogn runs/adam runs/mcdropout --ood holdout:5-9 \\
        --out report/
    mpiexec -n 4 python evaluate.py runs/vogn --mc-samples 32 --out report/

Under mpiexec the Monte Carlo samples are split over the processes, with the
same result as one process; rank 0 writes the report.  The command is
:func:`chainer_vogn.commands.evaluate_main`.
"""
import sys

try:
    import chainer_vogn  # NOQA: makes chainer importable on every stack
    from chainer_vogn.commands import evaluate_main
except KeyboardInterrupt:  # Ctrl-C while the libraries load
    sys.stderr.write('evaluate.py: interrupted\n')
    sys.exit(130)


if __name__ == '__main__':
    sys.exit(evaluate_main())
