"""Without MPI (pip install . without the mpi extra, no cluster MPI),
train.py and evaluate.py stop with one line naming the extra."""
import os
import subprocess
import sys

import pytest

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
    assert "pip install '.[mpi]'" in lines[0]
    assert not os.path.exists(out)
