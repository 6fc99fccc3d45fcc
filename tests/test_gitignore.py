"""What README.md's commands write in the clone is ignored by git, so that
following the README leaves `git status` clean."""
import os
import re
import subprocess

import pytest

from test_readme import readme_blocks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_outputs():
    """What README's commands write, relative to the clone: a file in every
    --out folder, and every numpy.save target."""
    code = '\n'.join(code for language, code, _ in readme_blocks()
                     if language in ('sh', 'python'))
    found = [folder + '/report.md' for folder in
             re.findall(r'--out (\S+)', code)]
    found += re.findall(r"numpy\.save\('([^']+)'", code)
    return sorted(set(found))


def test_readme_writes_what_is_listed():
    # The parser finds them (a README rewrite that moves them is noticed).
    outputs = readme_outputs()
    for name in ('runs/vogn/report.md', 'report/report.md',
                 'report-vogn4/report.md', 'eight.npy'):
        assert name in outputs, outputs


@pytest.mark.parametrize('path', readme_outputs())
def test_readme_output_is_ignored(path):
    inside = subprocess.run(['git', 'rev-parse', '--is-inside-work-tree'],
                            cwd=REPO, capture_output=True, text=True)
    if inside.returncode != 0:
        pytest.skip('not a git checkout')
    result = subprocess.run(['git', 'check-ignore', '--no-index', '-q',
                             path], cwd=REPO)
    assert result.returncode == 0, path + ' is not ignored (.gitignore)'
