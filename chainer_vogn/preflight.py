"""Checks a GPU job's software and node before it starts training.

The job scripts run ``python -m chainer_vogn.preflight --gpus N --launcher
mpirun`` on the job's first node after loading the modules (``--gpus 0``:
a run on the CPU, where only the launcher is checked).  It checks, in
seconds, what would otherwise fail (or silently slow down) only once 16
processes have started: the launcher is on PATH, CuPy imports and sees at
least N GPUs, CuPy loads an NCCL at least as new as CuPy 13 supports, and
cuDNN loads (unless ``CHAINER_CUDNN=0`` switches it off on purpose, as it
does in Chainer).  The first problem ends it with exit status 1 and one line
on stderr that names the fix; otherwise it prints one line of versions.
"""
import argparse
import importlib
import os
import shutil
import sys

#: The oldest NCCL that CuPy 13 supports (its installation guide lists
#: NCCL 2.16 as the first); TSUBAME3.0's newest module, 2.8, is older.
MIN_NCCL = (2, 16)


class PreflightError(Exception):
    """A problem of the node or the environment, with its fix."""


def nccl_version(code):
    """(major, minor, patch) of ``ncclGetVersion``'s number: NCCL 2.9 and
    newer count 10000 a major version (21603 is 2.16.3), older ones 1000
    (2804 is 2.8.4)."""
    per_major = 10000 if code >= 20900 else 1000
    return code // per_major, code % per_major // 100, code % 100


def check(gpus, launcher, environ=os.environ,
          import_module=importlib.import_module, which=shutil.which):
    """Raise :class:`PreflightError` for the first problem; else return a
    line with the versions found.  ``import_module`` and ``which`` are
    where the facts come from (stand-ins in the tests)."""
    if which(launcher) is None:
        raise PreflightError(
            '{} not found on PATH: load the MPI module (MODULES) or put '
            'your MPI on PATH'.format(launcher))
    if gpus == 0:
        return 'preflight: {} on PATH, CPU run (no GPU checks)'.format(launcher)
    cupy = _load(import_module, 'cupy',
                 'CuPy does not import ({}): build the environment of '
                 'docs/cluster.md and load a CUDA 12 module')
    try:
        found = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        raise PreflightError(
            'CuPy finds no GPU ({}): run on a GPU node with a driver that '
            'fits the CUDA module'.format(_one_line(e)))
    if found < gpus:
        raise PreflightError(
            '{} GPU(s) visible on this node, {} processes per node need one '
            'each: request whole GPU nodes or set GPUS_PER_NODE={}'.format(
                found, gpus, found))
    nccl = _load(import_module, 'cupy.cuda.nccl',
                 'CuPy cannot load NCCL ({}): load an nccl module or install '
                 'NCCL with python -m cupyx.tools.install_library --library '
                 'nccl --cuda 12.x (docs/cluster.md)')
    version = nccl_version(nccl.get_version())
    if version[:2] < MIN_NCCL:
        raise PreflightError(
            'NCCL {} is older than {}, the oldest CuPy 13 supports: load a '
            'newer nccl module (module avail nccl) or install NCCL with '
            'python -m cupyx.tools.install_library --library nccl'.format(
                _dotted(version), _dotted(MIN_NCCL)))
    line = 'preflight: {} on PATH, CuPy {}, {} GPU(s), NCCL {}'.format(
        launcher, cupy.__version__, found, _dotted(version))
    if environ.get('CHAINER_CUDNN', '1') == '0':
        return line + ', cuDNN off (CHAINER_CUDNN=0)'
    # Chainer uses cuDNN when cupy.cudnn imports, as here.
    _load(import_module, 'cupy.cudnn',
          'cuDNN does not load ({}), so Chainer would run without it: load '
          'the cudnn module that fits CuPy 13 (8.x), or set CHAINER_CUDNN=0 '
          'to run without it on purpose')
    cudnn = import_module('cupy.cuda.cudnn')
    return line + ', cuDNN {}'.format(cudnn.getVersion())


def _load(import_module, name, problem):
    try:
        return import_module(name)
    except Exception as e:  # ImportError, or a library that fails to load
        raise PreflightError(problem.format(_one_line(e)))


def _one_line(error):
    return ' '.join(str(error).split()) or type(error).__name__


def _dotted(version):
    return '.'.join(str(v) for v in version)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m chainer_vogn.preflight',
        description=__doc__.split('\n')[0])
    parser.add_argument('--gpus', type=int, required=True,
                        help='GPUs this node must have: one per process '
                             '(0: a run on the CPU)')
    parser.add_argument('--launcher', required=True,
                        help='the program that starts the processes '
                             '(mpirun, srun, mpiexec)')
    args = parser.parse_args(argv)
    try:
        print(check(args.gpus, args.launcher))
    except PreflightError as e:
        print('preflight: {}'.format(e), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
