"""chainer_vogn.preflight against stand-ins for CuPy, NCCL, cuDNN and PATH."""
import subprocess
import sys
import types

import pytest

from chainer_vogn import preflight


def stand_ins(gpus=4, nccl=21603, cudnn=8907, broken=()):
    """import_module: stand-in modules by name; names in ``broken`` raise
    the ImportError a missing library gives."""
    def device_count():
        if gpus is None:
            raise RuntimeError('cudaErrorNoDevice: no CUDA-capable device')
        return gpus
    modules = {
        'cupy': types.SimpleNamespace(
            __version__='13.6.0',
            cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(
                getDeviceCount=device_count))),
        'cupy.cuda.nccl': types.SimpleNamespace(get_version=lambda: nccl),
        'cupy.cudnn': types.SimpleNamespace(),
        'cupy.cuda.cudnn': types.SimpleNamespace(getVersion=lambda: cudnn),
    }

    def import_module(name):
        if name in broken:
            raise ImportError('lib{}.so: cannot open shared object '
                              'file'.format(name.split('.')[-1]))
        return modules[name]
    return import_module


def run(need=4, launcher='mpirun', environ=None, on_path=('mpirun', 'srun'),
        **facts):
    """check() for ``need`` GPUs on a node described by ``facts``."""
    return preflight.check(
        need, launcher, environ={} if environ is None else environ,
        import_module=stand_ins(**facts),
        which=lambda name: '/usr/bin/' + name if name in on_path else None)


@pytest.mark.parametrize('code, version', [
    (21603, (2, 16, 3)), (22005, (2, 20, 5)), (2804, (2, 8, 4)),
    (2708, (2, 7, 8))])
def test_nccl_version_numbers_of_both_schemes(code, version):
    assert preflight.nccl_version(code) == version


def test_a_good_node_passes_with_the_versions():
    line = run(launcher='srun', gpus=4)
    assert line == ('preflight: srun on PATH, CuPy 13.6.0, 4 GPU(s), '
                    'NCCL 2.16.3, cuDNN 8907')


@pytest.mark.parametrize('kwargs, words', [
    (dict(on_path=('srun',)), ['mpirun not found', 'MODULES']),
    (dict(broken=('cupy',)), ['CuPy does not import', 'libcupy.so']),
    (dict(gpus=None), ['no GPU', 'cudaErrorNoDevice']),
    (dict(gpus=2), ['2 GPU(s)', '4 processes', 'GPUS_PER_NODE=2']),
    (dict(broken=('cupy.cuda.nccl',)),
     ['cannot load NCCL', 'install_library --library nccl']),
    (dict(nccl=2804), ['NCCL 2.8.4 is older than 2.16', 'module avail nccl']),
    (dict(nccl=21507), ['NCCL 2.15.7 is older than 2.16']),
    (dict(broken=('cupy.cudnn',)), ['cuDNN does not load', 'CHAINER_CUDNN=0']),
])
def test_each_problem_is_one_line_naming_the_fix(kwargs, words):
    with pytest.raises(preflight.PreflightError) as info:
        run(**kwargs)
    message = str(info.value)
    assert '\n' not in message
    for word in words:
        assert word in message, message


def test_more_gpus_than_processes_pass():
    assert '8 GPU(s)' in run(need=4, gpus=8)


def test_a_cpu_run_checks_only_the_launcher():
    line = run(need=0, launcher='mpiexec', on_path=('mpiexec',),
               broken=('cupy', 'cupy.cuda.nccl', 'cupy.cudnn'))
    assert line == 'preflight: mpiexec on PATH, CPU run (no GPU checks)'
    with pytest.raises(preflight.PreflightError, match='mpiexec not found'):
        run(need=0, launcher='mpiexec', on_path=())


def test_cudnn_switched_off_on_purpose_is_not_checked():
    line = run(environ={'CHAINER_CUDNN': '0'}, broken=('cupy.cudnn',))
    assert line.endswith('cuDNN off (CHAINER_CUDNN=0)')


def test_command_line_fails_in_seconds_with_one_message():
    """The real module on this machine: exit 1, one line on stderr."""
    result = subprocess.run(
        [sys.executable, '-m', 'chainer_vogn.preflight', '--gpus', '4',
         '--launcher', 'no-such-launcher'],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ''
    assert result.stderr.splitlines() == [
        'preflight: no-such-launcher not found on PATH: load the MPI '
        'module (MODULES) or put your MPI on PATH']
