"""The console commands of a pip install: chainer-vogn-train, -evaluate and
-predict.

Outside the package on purpose: importing anything of ``chainer_vogn`` loads
Chainer and SciPy first (seconds), and Ctrl-C meanwhile must be one line, as
for train.py, evaluate.py and predict.py, not a traceback from the
entry-point wrapper that does the import.
"""
import importlib
import os
import sys


def _run(main):
    """``chainer_vogn.commands.<main>()``, imported here."""
    program = os.path.basename(sys.argv[0])  # chainer-vogn-train, ...
    try:
        import chainer_vogn  # NOQA: makes chainer importable on every stack
        command = getattr(importlib.import_module('chainer_vogn.commands'),
                          main)
    except KeyboardInterrupt:  # Ctrl-C while the libraries load
        sys.stderr.write('{}: interrupted\n'.format(program))
        sys.exit(130)
    return command()


def train():
    """chainer-vogn-train: :func:`chainer_vogn.commands.train_main`."""
    return _run('train_main')


def evaluate():
    """chainer-vogn-evaluate: :func:`chainer_vogn.commands.evaluate_main`."""
    return _run('evaluate_main')


def predict():
    """chainer-vogn-predict: :func:`chainer_vogn.commands.predict_main`."""
    return _run('predict_main')
