"""README.md's commands run as written, in order, in a copy of the
repository, so that they cannot rot.

Every ```sh and ```python block runs, except the blocks followed by a
``<!-- readme-test: not run: REASON -->`` line; those are listed in
NOT_RUN below and checked, so none is left out silently.  ``make env`` is
the one command replaced: it builds .venv, and the copy's .venv is a link to
the environment this test runs in.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, 'README.md')
NOT_RUN_MARK = re.compile(r'<!-- readme-test: not run: (.+?) -->')

#: The first command of each block the test does not run.
NOT_RUN = ['make test', 'PIP_CONSTRAINT=requirements/build.txt', 'qsub']

#: Commands replaced in the blocks that run: {command: why}.
REPLACED = {'make env': 'builds .venv; the copy links .venv to the test\'s '
                        'own environment instead'}


def readme_blocks():
    """[(language, code, reason not run or None)] in README order."""
    with open(README) as f:
        text = f.read()
    found = []
    pattern = re.compile(r'^```(\w*)\n(.*?)^```\n', re.S | re.M)
    for match in pattern.finditer(text):
        after = text[match.end():].lstrip('\n').split('\n', 1)[0]
        skip = NOT_RUN_MARK.match(after)
        found.append((match.group(1), match.group(2),
                      skip.group(1) if skip else None))
    return found


def test_blocks_not_run_are_the_listed_ones():
    blocks = [b for b in readme_blocks() if b[0] in ('sh', 'python')]
    skipped = [code.splitlines()[0] for _, code, why in blocks if why]
    assert len(skipped) == len(NOT_RUN)
    for line, command in zip(skipped, NOT_RUN):
        assert line.startswith(command), (line, command)
    for command in REPLACED:
        assert any(command in code for _, code, why in blocks if not why)


def test_quickstart_is_at_most_15_lines():
    text = open(README).read()
    section = text[text.index('## Quickstart'):]
    code = re.search(r'```sh\n(.*?)```', section, re.S).group(1)
    assert len(code.splitlines()) <= 15


def script_of_runnable_blocks():
    lines = []
    for language, code, why in readme_blocks():
        if why or language not in ('sh', 'python'):
            continue
        for command in REPLACED:
            code = code.replace(command, 'true')
        if language == 'python':
            code = "python - <<'PYTHON_BLOCK'\n" + code + 'PYTHON_BLOCK\n'
        lines.append(code)
    return '\n'.join(lines)


def copy_of_repository(dest):
    """The files git knows (tracked or not ignored) of this checkout."""
    listed = subprocess.run(
        ['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=REPO,
        capture_output=True, text=True, check=True).stdout.split('\0')
    for name in filter(None, listed):
        source = os.path.join(REPO, name)
        if os.path.isfile(source):
            target = os.path.join(dest, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)


@pytest.mark.e2e
@pytest.mark.mpi  # the README's mpiexec examples
def test_commands_run_as_written(tmp_path):
    clone = tmp_path / 'chainer-vogn'
    copy_of_repository(str(clone))
    if not os.path.exists(os.path.join(sys.prefix, 'bin', 'activate')):
        pytest.fail('the test must run in a virtual environment (as make '
                    'test does): the README activates .venv')
    os.symlink(sys.prefix, str(clone / '.venv'))
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    result = subprocess.run(
        ['bash', '-euo', 'pipefail', '-c', script_of_runnable_blocks()],
        cwd=str(clone), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, \
        result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout

    # The quickstart: the surest image is a known digit, rightly classified,
    # and the unseen digits are less certain on average.
    lines = {}
    for what in ('surest', 'least sure'):
        match = re.search('^' + what + r': a (\d) \((trained on|never seen)\) '
                          r'-> class (\d) at \d+%, entropy ([0-9.]+) nats$',
                          out, re.M)
        assert match, out
        lines[what] = match.groups()
    digit, seen, predicted, _ = lines['surest']
    assert seen == 'trained on' and predicted == digit, lines
    assert float(lines['least sure'][3]) > float(lines['surest'][3])
    match = re.search(r'^mean entropy: ([0-9.]+) nats on 0-4, ([0-9.]+) on '
                      r'5-9 \(never seen\)$', out, re.M)
    assert match, out
    assert float(match.group(2)) > float(match.group(1))
    # The command line prediction, on the file the README writes.
    assert re.search(r'^eight\.npy: \d \d+\.\d%, .*; entropy [0-9.]+ nats, '
                     r'mutual information [0-9.]+ nats$', out, re.M), out
    # Both evaluations wrote their reports, with the gallery.
    for folder in ('report', 'report-vogn4'):
        for name in ('report.md', 'gallery.png', 'roc_ood.png'):
            assert (clone / folder / name).stat().st_size > 0
