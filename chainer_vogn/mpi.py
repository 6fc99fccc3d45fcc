"""MPI for train.py and evaluate.py, or one line saying how to get it.

mpi4py is installed with the package, but the MPI library it loads is not:
the ``mpi`` extra brings Open MPI from PyPI, and a cluster has its own.
Without either, ``from mpi4py import MPI`` fails with a bare RuntimeError
naming a missing ``libmpi.so``; :func:`require_mpi` turns that into one line
naming the fix.
"""
import sys

#: README's install line (Installing), as written there: Chainer's build
#: fails without the two constraint variables.
INSTALL_COMMAND = ("PIP_CONSTRAINT=requirements/build.txt "
                   "PIP_BUILD_CONSTRAINT=requirements/build.txt "
                   "pip install '.[mpi]'")
#: What to do when MPI cannot be loaded.
INSTALL_HINT = ("install MPI with {} in the clone (from a git URL: see "
                "README.md, Installing), or load your cluster's MPI "
                "module".format(INSTALL_COMMAND))


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
