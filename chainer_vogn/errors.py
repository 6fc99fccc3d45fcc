"""Errors and the exit policy of train.py, evaluate.py and predict.py.

A failure the user can fix (options, files, data, a diverging run) ends the
job with one line on stderr, on every rank of an MPI job alike.
"""
import contextlib
import os
import signal
import sys
import threading


class RunError(Exception):
    """A failure to report in one line, then end the job on every rank."""


class Terminated(BaseException):
    """SIGTERM arrived: a kill, a scheduler's walltime, or mpiexec ending
    the job on Ctrl-C.  Not an Exception, so that Chainer's training loop
    lets it through as it does KeyboardInterrupt."""


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


def _say_once(line):
    """Write ``line`` to stderr, on rank 0 only if MPI is loaded.

    Open MPI's mpiexec stops forwarding the ranks' output as soon as it ends
    a job (on Ctrl-C or SIGTERM it sends the ranks SIGTERM, then SIGKILL,
    and exits), so a rank it started writes to mpiexec's own stderr.
    """
    mpi = sys.modules.get('mpi4py.MPI')
    if mpi is not None and mpi.COMM_WORLD.rank != 0:
        return
    if os.environ.get('PRTE_LAUNCHED'):
        try:
            fd = os.open('/proc/{}/fd/2'.format(os.getppid()),
                         os.O_WRONLY | os.O_APPEND)
        except OSError:
            pass  # not on mpiexec's node: stderr as usual
        else:
            with os.fdopen(fd, 'w') as f:
                f.write(line + '\n')
            return
    sys.stderr.write(line + '\n')
    sys.stderr.flush()


@contextlib.contextmanager
def _on_sigterm(line):
    """Say ``line`` the moment SIGTERM arrives; raise Terminated in the main
    thread.

    Python runs a signal handler only between bytecodes, and a rank blocked
    in a collective call that another rank has left never gets there before
    mpiexec's SIGKILL.  Python's C-level handler writes the signal's number
    to the wakeup fd at once, though, and a thread reading it says the line.
    """
    read, write = os.pipe()
    os.set_blocking(write, False)

    def watch():
        said = False
        for number in iter(lambda: os.read(read, 1), b''):
            if number[0] == signal.SIGTERM and not said:
                _say_once(line)
                said = True

    def raise_terminated(signum, frame):
        raise Terminated

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    previous_fd = signal.set_wakeup_fd(write)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGTERM, previous)
        os.close(write)
        watcher.join()
        os.close(read)


@contextlib.contextmanager
def exit_cleanly(program, terminated=''):
    """Run the body of ``program`` (train.py, evaluate.py, predict.py),
    ending it with one line on stderr for an expected failure (exit status
    1), Ctrl-C (130) or SIGTERM (143; the line ends with ``terminated``).

    Interrupts exit without MPI_Abort, as the terminal or mpiexec ends every
    rank; rank 0 alone says so.
    """
    try:
        with _on_sigterm('{}: terminated{}'.format(program, terminated)):
            yield
    except (KeyboardInterrupt, Terminated) as e:
        if isinstance(e, KeyboardInterrupt):
            _say_once('{}: interrupted'.format(program))
        # An interrupt inside a lazy import (matplotlib's, at the first
        # plot) leaves half-built objects whose destructors complain at
        # exit; the job is over, so that noise is dropped.
        sys.unraisablehook = lambda unraisable: None
        sys.exit(130 if isinstance(e, KeyboardInterrupt) else 143)
    except EXPECTED_FAILURES as e:
        fail('{}: error: {}'.format(program, describe_failure(e)))
