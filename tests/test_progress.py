"""The progress output of train.py and evaluate.py (chainer_vogn.progress);
under mpiexec in and out of a terminal: tests/test_train.py and
tests/test_evaluate.py."""
import io
import os
import pty
import subprocess
import sys

import pytest

from chainer_vogn import progress


class Clock(object):
    """time.time, moved by hand."""
    now = 1000.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def no_launcher(monkeypatch):
    for name in progress.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def shown(style, step, total=50, first=0):
    """What a Progress in ``style`` writes over updates first+1..total,
    ``step`` seconds apart, then closed."""
    out = io.StringIO()
    clock = Clock()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(progress.time, 'time', clock)
    try:
        bar = progress.Progress(total, style, 'training', 'images', 32, out)
        bar.start(first)
        for done in range(first + 1, total + 1):
            clock.now += step
            bar.update(done, 'epoch {}/1'.format(done / total))
        bar.close()
    finally:
        monkeypatch.undo()
    return out.getvalue()


def test_lines_come_at_each_tenth_with_rates_and_time_left():
    text = shown('lines', 1.0)
    lines = text.splitlines()
    assert '\r' not in text and '\x1b' not in text
    assert [line.split('%')[0].split()[-1] for line in lines] == \
        [str(p) for p in range(10, 101, 10)]
    # 5 iterations in 5 s
    assert lines[0] == 'training  10% (epoch 0.1/1), 0:00:45 left, 32 ' \
        'images/s'
    assert lines[-1].endswith(', 0:00:00 left, 32 images/s')


def test_bar_is_redrawn_in_place_at_most_every_redraw_seconds():
    text = shown('bar', 0.01)
    assert '\n' not in text
    draws = text.split('\r')
    assert draws[-1] == progress.CLEAR_LINE  # close() clears the bar
    draws = draws[:-1]
    # The first update, every tenth of a second (10 updates) and the last.
    assert 5 <= len(draws) <= 7
    assert draws[0].startswith('training [...............]   2% ')
    assert draws[-1].startswith('training [###############] 100% ')
    assert all(d.endswith(' left, 3200 images/s' + progress.CLEAR_LINE)
               for d in draws)


def test_bar_keeps_to_one_row_of_the_terminal(monkeypatch):
    monkeypatch.setenv('COLUMNS', '40')
    draws = shown('bar', 0.01).split('\r')[:-1]
    assert draws and all(len(d) == 39 + len(progress.CLEAR_LINE)
                         for d in draws)


def test_rates_and_lines_count_from_start():
    """A resumed run: 30 of 50 done before; 20 more at 1 s each."""
    lines = shown('lines', 1.0, first=30).splitlines()
    assert [line.split('%')[0].split()[-1] for line in lines] == \
        ['70', '80', '90', '100']
    assert lines[0].endswith(', 32 images/s')


def test_nothing_without_style():
    assert shown(None, 1.0) == ''


def test_choose_shows_on_rank_zero_only(no_launcher):
    assert progress.choose(True, 0, Terminal()) == 'bar'
    assert progress.choose(True, 0, io.StringIO()) == 'lines'
    assert progress.choose(True, 1, Terminal()) is None
    assert progress.choose(False, 0, Terminal()) is None


RANK = ('import sys; from chainer_vogn import progress; '
        'sys.stderr.write(str(progress.is_terminal(sys.stdout)))')
#: A stand-in of mpiexec: it starts a rank whose stdout is a pipe of its
#: own, through a shell that shares that pipe.
LAUNCHER = ('import subprocess, sys; subprocess.run(["sh", "-c", '
            '"\\"$0\\" -c \\"$1\\"; true", sys.executable, sys.argv[1]], '
            'stdout=subprocess.PIPE)')


@pytest.mark.parametrize('terminal', [True, False])
def test_a_rank_sees_whether_the_launcher_writes_to_a_terminal(terminal):
    env = dict(os.environ, OMPI_COMM_WORLD_SIZE='1')
    if terminal:
        master, stdout = pty.openpty()
    else:
        master, stdout = os.pipe()
    try:
        result = subprocess.run([sys.executable, '-c', LAUNCHER, RANK],
                                stdout=stdout, stderr=subprocess.PIPE,
                                env=env, text=True, timeout=60)
    finally:
        os.close(master)
        os.close(stdout)
    assert result.stderr == str(terminal)
