"""MPI for train.py and evaluate.py, or one line saying how to get it.

mpi4py is installed with the package, but the MPI library it loads is not:
the ``mpi`` extra brings Open MPI from PyPI, and a cluster has its own.
Without either, ``from mpi4py import MPI`` fails with a bare RuntimeError
naming a missing ``libmpi.so``; :func:`require_mpi` turns that into one line
naming the fix.
"""
import sys

#: What to do when MPI cannot be loaded.
INSTALL_HINT = ("install MPI with pip install '.[mpi]' in the clone (or "
                "pip install 'chainer-vogn[mpi] @ git+URL'), or load your "
                "cluster's MPI module (see README.md, Installing)")


def require_mpi(program):
    """The ``mpi4py.MPI`` module; ends ``program`` with one line when MPI
    cannot be loaded."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else \
            type(e).__name__
        sys.exit('{}: error: MPI is not available ({}); {}'.format(
            program, reason, INSTALL_HINT))
    return MPI
