"""Errors and the exit policy of train.py, evaluate.py and predict.py.

A failure the user can fix (options, files, data, a diverging run) ends the
job with one line on stderr, on every rank of an MPI job alike.
"""
import contextlib
import sys


class RunError(Exception):
    """A failure to report in one line, then end the job on every rank."""


def _world():
    """MPI's world communicator, or None where MPI cannot be loaded
    (predict.py runs without it)."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError):
        return None
    return MPI.COMM_WORLD


def fail(message, status=1):
    """Print ``message`` and end the job: every rank, if there are several.

    A rank that merely exited would leave the others blocked in their next
    collective call, so a multi-process job is aborted through MPI; a
    one-process run just exits with ``status``.
    """
    world = _world()
    several = world is not None and world.size > 1
    prefix = '[rank {}] '.format(world.rank) if several else ''
    sys.stderr.write(prefix + message + '\n')
    sys.stderr.flush()
    if several:
        world.Abort(status)
    sys.exit(status)


#: The failures that train.py and evaluate.py report in one line: the user
#: can fix them (options, files, data, a diverging run), so a traceback
#: would only hide the message.
EXPECTED_FAILURES = (RunError, ValueError, OSError, FloatingPointError)


def describe_failure(error):
    """``error`` in one line; OSErrors as 'path: reason'."""
    if isinstance(error, OSError) and error.strerror:
        where = error.filename if error.filename is not None else ''
        text = '{}: {}'.format(where, error.strerror) if where else \
            error.strerror
    else:
        text = str(error) or type(error).__name__
    return ' '.join(text.split())


@contextlib.contextmanager
def exit_cleanly(program):
    """Run the body of ``program`` (train.py, evaluate.py, predict.py),
    ending it with one line on stderr for an expected failure (exit status
    1) or Ctrl-C (130).

    Ctrl-C reaches every rank of an mpiexec job, and mpiexec ends the job,
    so an interrupt exits without MPI_Abort; rank 0 alone says so.
    """
    try:
        yield
    except KeyboardInterrupt:
        world = _world()
        if world is None or world.rank == 0:
            sys.stderr.write('{}: interrupted\n'.format(program))
            sys.stderr.flush()
        # An interrupt inside a lazy import (matplotlib's, at the first
        # plot) leaves half-built objects whose destructors complain at
        # exit; the job is over, so that noise is dropped.
        sys.unraisablehook = lambda unraisable: None
        sys.exit(130)
    except EXPECTED_FAILURES as e:
        fail('{}: error: {}'.format(program, describe_failure(e)))
