"""Progress of train.py and evaluate.py on rank 0: a bar on a terminal,
else a plain line at every tenth of the work, each with throughput and the
time left.

Under an MPI launcher a rank's stdout is a pseudo-terminal or pipe of the
launcher whatever the launcher writes to, so whether the output ends on a
terminal is decided by the launcher's own stdout (:func:`is_terminal`).
"""
import datetime
import os
import shutil
import sys
import time

#: Set in the ranks by Open MPI, PMI (MPICH, Slurm) and PMIx launchers.
LAUNCHER_VARIABLES = ('OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'PMIX_RANK')
#: Seconds between two draws of the bar.
REDRAW = 0.1
#: Plain lines come at every 1/LINES of the work.
LINES = 10
WIDTH = 15
CLEAR_LINE = '\x1b[K'


def is_terminal(stream):
    """Whether what is written to ``stream`` ends on a terminal.

    Under a launcher (:data:`LAUNCHER_VARIABLES`) that is the launcher's
    stdout: that of the nearest ancestor process (mpiexec, or its daemon on
    another node) whose stream is another file than this process's.  Read
    from /proc, so on Linux only; elsewhere it counts as no terminal.
    """
    if not any(name in os.environ for name in LAUNCHER_VARIABLES):
        return stream.isatty()
    try:
        fd = stream.fileno()
        mine = os.fstat(fd)
        pid = os.getppid()
        while pid > 1:
            path = '/proc/{}/fd/{}'.format(pid, fd)
            theirs = os.stat(path)
            if (theirs.st_dev, theirs.st_ino) != (mine.st_dev, mine.st_ino):
                return os.readlink(path).startswith(('/dev/pts/', '/dev/tty'))
            pid = _parent(pid)
    except OSError:
        pass
    return False


def _parent(pid):
    with open('/proc/{}/status'.format(pid)) as f:
        for line in f:
            if line.startswith('PPid:'):
                return int(line.split()[1])
    return 0


def choose(enabled, rank, stream=None):
    """The :class:`Progress` style of ``rank``: 'bar' or 'lines' on rank 0
    when ``enabled`` (a bar when ``stream``, stdout by default, ends on a
    terminal), else None."""
    if not enabled or rank != 0:
        return None
    return 'bar' if is_terminal(stream or sys.stdout) else 'lines'


class Progress(object):
    """``done`` of ``total`` (> 0) units of work, shown on ``out`` in
    ``style`` ('bar', 'lines' or None for nothing), each draw starting with
    ``title``.

    The throughput is shown in ``rate``/s, ``per_unit`` of them a unit of
    work; it and the time left count from :meth:`start`, so a resumed run
    does not count the work done before it.
    """

    def __init__(self, total, style, title, rate, per_unit=1, out=None):
        self.total = total
        self.style = style
        self.title = title
        self.rate = rate
        self.per_unit = per_unit
        self.out = out or sys.stdout
        self.start(0)

    def start(self, done):
        """Count the rates from ``done`` units of work, now."""
        self.done = self.first = done
        self.started = time.time()
        self.drawn_at = None
        self.tenths = self._tenths(done)

    def _tenths(self, done):
        return min(LINES, int(LINES * done / self.total))

    def describe(self, done, where='', bar=''):
        """The text of a draw: title, ``bar``, share done, ``where``, time
        left, throughput (last, as a narrow terminal cuts the bar's end)."""
        text = '{}{} {:3.0f}%'.format(self.title, bar,
                                      100 * min(done / self.total, 1))
        if where:
            text += ' ({})'.format(where)
        elapsed = time.time() - self.started
        speed = (done - self.first) / elapsed if elapsed > 0 else 0
        if speed > 0:
            left = max(self.total - done, 0) / speed
            text += ', {} left'.format(datetime.timedelta(seconds=round(left)))
            text += ', {} {}/s'.format(_rate(speed * self.per_unit),
                                       self.rate)
        return text

    def update(self, done, where=''):
        """Show that ``done`` units are done, if it is time to: the bar at
        most every :data:`REDRAW` seconds, a line at each new tenth."""
        self.done = done
        if self.style == 'bar':
            now = time.time()
            if self.drawn_at is None or now - self.drawn_at >= REDRAW or \
                    done >= self.total:
                self.drawn_at = now
                filled = min(WIDTH, int(WIDTH * done / self.total))
                bar = ' [{}{}]'.format('#' * filled, '.' * (WIDTH - filled))
                # One row (a wrapped one would scroll at each draw), then
                # back to its start: the next draw, or a line printed
                # meanwhile, overwrites the bar.
                columns = shutil.get_terminal_size().columns - 1
                self.out.write(self.describe(done, where, bar)[:columns] +
                               CLEAR_LINE + '\r')
                self.out.flush()
        elif self.style == 'lines' and self._tenths(done) > self.tenths:
            self.tenths = self._tenths(done)
            self.out.write(self.describe(done, where) + '\n')
            self.out.flush()

    def advance(self, units):
        """Show that ``units`` more are done."""
        self.update(self.done + units)

    def close(self):
        """Clear the bar, leaving the cursor where the bar began."""
        if self.style == 'bar' and self.drawn_at is not None:
            self.out.write(CLEAR_LINE)
            self.out.flush()


def _rate(value):
    return '{:.3g}'.format(value) if value < 100 else '{:.0f}'.format(value)
