"""Helpers shared by the bench scripts: machine facts, tables, JSON, data."""
import os
import platform
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import chainer_vogn  # NOQA: makes chainer importable on every stack
import numpy  # NOQA: E402

from chainer_vogn import compat  # NOQA: E402
from chainer_vogn import files  # NOQA: E402


def cpu_model():
    """lscpu's model name, or the platform's processor string."""
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
    except OSError:
        out = ''
    for line in out.splitlines():
        if line.startswith('Model name:'):
            return line.split(':', 1)[1].strip()
    return platform.processor() or 'unknown'


def machine(device=-1):
    """What produces the figures: CPU, cores, load, versions, threads.

    Call it first: the load average tells how busy the machine was then.
    """
    info = dict(compat.versions(), cpu=cpu_model(),
                cores=os.cpu_count(), load_average_at_start=os.getloadavg(),
                command=' '.join([os.path.basename(sys.executable)] +
                                 sys.argv))
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
        if var in os.environ:
            info[var] = os.environ[var]
    if device >= 0:
        import cupy
        name = cupy.cuda.runtime.getDeviceProperties(device)['name']
        info['gpu'] = name.decode() if isinstance(name, bytes) else name
    return info


def write_json(path, data):
    """Write ``data`` to ``path`` (if given) as indented JSON, atomically."""
    if path:
        files.write_json(path, data)
        print('wrote', path)


def print_table(headers, rows):
    """Print rows as a Markdown table (floats to 3 significant digits)."""
    def cell(v):
        if not isinstance(v, float):
            return str(v)
        return '{:.3g}'.format(v) if abs(v) < 1000 else '{:.0f}'.format(v)
    print('| ' + ' | '.join(headers) + ' |')
    print('|' + '---|' * len(headers))
    for row in rows:
        print('| ' + ' | '.join(cell(v) for v in row) + ' |')


def random_batch(batch, device, seed=0, channels=3, size=32, n_classes=10):
    """A CIFAR-sized random batch (float32 images, int32 labels) on device."""
    rng = numpy.random.RandomState(seed)
    x = rng.randn(batch, channels, size, size).astype(numpy.float32)
    t = rng.randint(0, n_classes, batch).astype(numpy.int32)
    return device.send(x), device.send(t)


def synchronize(device):
    """Wait for the GPU's queued work (nothing to do on the CPU)."""
    if device.xp is not numpy:
        device.xp.cuda.Device().synchronize()


#: Thread pools that mpiexec_prefix limits to one thread per process.
THREAD_VARS = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')


def mpiexec_prefix(n, btl):
    """mpiexec next to this interpreter (or on PATH); as root, allowed."""
    here = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
    cmd = [here if os.path.exists(here) else 'mpiexec']
    if os.geteuid() == 0:
        cmd += ['--allow-run-as-root', '--oversubscribe']
    cmd += ['-n', str(n), '--mca', 'btl', btl]
    for var in THREAD_VARS:
        cmd += ['-x', '{}=1'.format(var)]
    return cmd
