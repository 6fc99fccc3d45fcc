"""Installing with pip.

README's pip line works from nothing: a new venv with the interpreter's own
pip and no cache (marked ``install``; ``make test-install`` runs it alone).
Without MPI (pip install . without the mpi extra, no cluster MPI),
train.py and evaluate.py stop with one line naming the extra."""
import json
import os
import re
import subprocess
import sys

import pytest

from chainer_vogn import mpi

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stand_in_really_hides_mpi(no_mpi_env):
    result = subprocess.run(
        [sys.executable, '-c', 'from mpi4py import MPI'], env=no_mpi_env,
        capture_output=True, text=True, timeout=60)
    assert 'cannot load MPI library' in result.stderr


@pytest.mark.parametrize('script,args', [
    ('train.py', ['--epochs', '1']),
    ('evaluate.py', ['some-run']),
])
def test_without_mpi_one_line_names_the_extra(no_mpi_env, tmp_path, script,
                                               args):
    out = str(tmp_path / 'out')
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, script)] + args + ['--out', out],
        env=no_mpi_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(script + ': error: MPI is not available '
                               '(cannot load MPI library)')
    assert mpi.INSTALL_COMMAND in lines[0]
    assert not os.path.exists(out)


def readme_install_line():
    """The pip command of README.md's Installing section, as written."""
    from test_readme import readme_blocks
    lines = [line for language, code, _ in readme_blocks() if language == 'sh'
             for line in code.splitlines() if "pip install '.[mpi]'" in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_the_hint_is_readme_install_line():
    assert mpi.INSTALL_COMMAND == readme_install_line()


def base_interpreter():
    """The interpreter this test's virtual environment was made from, with
    its own bundled pip (ensurepip), as `python3.11 -m venv` gives a user."""
    python = getattr(sys, '_base_executable', None) or sys.executable
    return os.path.realpath(python)


@pytest.mark.install
@pytest.mark.e2e
@pytest.mark.mpi
def test_pip_route_from_nothing(tmp_path):
    """README's pip line in a new venv (its own pip, no cache, so Chainer is
    built from its source archive), then the installed commands outside the
    clone: chainer-vogn-train on one process and under mpiexec -n 2
    --samples 2, chainer-vogn-evaluate and chainer-vogn-predict.  1 to 2
    minutes, most of it downloads."""
    from test_readme import copy_of_repository
    clone = tmp_path / 'chainer-vogn'
    copy_of_repository(str(clone))
    venv = tmp_path / 'venv'
    subprocess.run([base_interpreter(), '-m', 'venv', str(venv)], check=True,
                   timeout=300)
    bindir = str(venv / 'bin')
    python = os.path.join(bindir, 'python')
    # What the user's shell has after `. venv/bin/activate`, and nothing of
    # the constraints this suite's own environment was built with.
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'PYTHONHOME', 'PIP_CONSTRAINT',
                        'PIP_BUILD_CONSTRAINT', 'PIP_NO_BUILD_ISOLATION',
                        'PIP_USE_FEATURE', 'PIP_FIND_LINKS')}
    env.update(VIRTUAL_ENV=str(venv),
               PATH=bindir + os.pathsep + os.environ.get('PATH', ''))
    pip = subprocess.run([python, '-m', 'pip', '--version'], env=env,
                         capture_output=True, text=True, check=True).stdout
    line = readme_install_line().replace('pip install',
                                         'pip install --no-cache-dir', 1)
    result = subprocess.run(['bash', '-euo', 'pipefail', '-c', line],
                            cwd=str(clone), env=env, capture_output=True,
                            text=True, timeout=1200)
    log = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, pip + log
    # Built here from the source archive, not taken from a cache (pip
    # before 23.1 installs it with setup.py install where wheel is missing).
    assert re.search(r'(Building wheel for|Running setup\.py install for) '
                     r'chainer ', result.stdout), pip + log

    installed = subprocess.run(
        [python, '-c', 'import chainer_vogn, chainer; '
         'print(chainer_vogn.__file__); print(chainer.__version__)'],
        cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=300)
    assert installed.returncode == 0, installed.stderr
    where, version = installed.stdout.split()
    assert where.startswith(str(venv)) and version == '7.8.1'

    def run(command, timeout=600):
        done = subprocess.run(command, cwd=str(tmp_path), env=env,
                              capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, \
            ' '.join(command) + '\n' + done.stdout[-3000:] + \
            done.stderr[-3000:]

    one, two, report = (str(tmp_path / name) for name in ('r1', 'r2', 'rep'))
    common = ['--dataset', 'digits', '--epochs', '1', '--no-progress']
    # The installed commands, outside the clone.
    train, evaluate, predict = (os.path.join(bindir, 'chainer-vogn-' + name)
                                for name in ('train', 'evaluate', 'predict'))
    run([train] + common + ['--out', one])
    run([os.path.join(bindir, 'mpiexec'), '--allow-run-as-root',
         '--oversubscribe', '-n', '2', train, '--samples', '2']
        + common + ['--out', two])
    run([evaluate, one, '--out', report])
    with open(os.path.join(two, 'config.json')) as f:
        assert json.load(f)['processes'] == 2
    assert os.path.getsize(os.path.join(report, 'report.md')) > 0
    image = str(tmp_path / 'seven.npy')
    run([python, '-c', 'import numpy; from sklearn.datasets import '
         'load_digits; numpy.save({!r}, load_digits().images[7] / 16)'.format(
             image)])
    run([predict, two, image, '-T', '3'])
