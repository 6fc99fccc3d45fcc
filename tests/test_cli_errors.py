"""train.py and evaluate.py end every expected failure with one line.

Each case runs the script as a user would and checks the exit status and
that stderr holds the one ``train.py: error: ...`` line (no traceback, no
MPI_Abort banner, no Chainer training-loop dump).
"""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy
import pytest

from chainer_vogn import commands
from chainer_vogn import files
from chainer_vogn import run_options

from conftest import wait_for_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, 'train.py')
EVALUATE = os.path.join(REPO, 'evaluate.py')
SMALL = ['--dataset', 'digits', '--arch', 'mlp', '--no-progress']

#: A device number no machine has: fails with or without CuPy.
NO_SUCH_GPU = '99'


def _run(script, args, **kwargs):
    return subprocess.run([sys.executable, script] + args,
                          capture_output=True, text=True, timeout=300,
                          **kwargs)


def assert_one_line(result, status, program, *fragments):
    """Exit ``status`` and stderr one line 'program: ...' holding each of
    ``fragments``."""
    lines = result.stderr.splitlines()
    assert result.returncode == status, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(program + ': '), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# train.py: options from the command line and from --config files

@pytest.mark.parametrize('args, message', [
    (['--epochs', '0'], 'epochs: 0 is invalid; it must be an integer >= 1'),
    (['--epochs', '1.5'], "epochs: '1.5' is invalid"),
    (['--snapshot-interval', '0'], 'snapshot_interval: 0 is invalid'),
    (['--batchsize', '-4'], 'batchsize: -4 is invalid'),
    (['--optimizer', 'adam', '--lr', '-1'], 'lr: -1.0 is invalid'),
    (['--optimizer', 'sgd', '--momentum', '1'], 'momentum: 1.0 is invalid'),
    (['--classes', '3'], "classes: '3' is one class"),
    (['--beta2', '1'], 'beta2 = 1.0 is invalid'),
    (['--optimizer', 'adam', '--mc', '3'], 'mc: 3 applies to vogn or ivon only'),
    (['--no-such-option'], 'unrecognized arguments'),
    (['--label-noise', '1'], 'label_noise: 1.0 is invalid'),
    (['--label-noise', 'nan'], 'label_noise: nan is invalid'),
    (['--val-split', '1'], 'val_split: 1.0 is invalid'),
])
def test_bad_option_on_the_command_line(tmp_path, args, message):
    result = _run(TRAIN, SMALL + args + ['--out', str(tmp_path / 'out')])
    assert_one_line(result, 2, 'train.py', message)
    assert not os.path.exists(str(tmp_path / 'out'))


@pytest.mark.parametrize('name, text, message', [
    ('c.yaml', 'epochs: 0\n', 'epochs: 0 is invalid'),
    ('c.yaml', 'snapshot_interval: 0\n', 'snapshot_interval: 0 is invalid'),
    ('c.json', '{"batchsize": -4}', 'batchsize: -4 is invalid'),
    ('c.yaml', 'epochs: 1.5\n', 'epochs: 1.5 is invalid'),
    ('c.yaml', 'augment: maybe\n', "augment: 'maybe' is invalid"),
    ('c.yaml', 'optimizer: adam\nlr: -1\n', 'lr: -1.0 is invalid'),
    ('c.yaml', 'classes: 3\n', "classes: '3' is one class"),
    ('c.yaml', 'epochs: [1\n', 'not valid YAML (line 2, column 1)'),
    ('c.json', '{"epochs": 2,}', 'not valid JSON'),
    ('c.yaml', '- epochs\n', 'expected a mapping'),
    ('c.yaml', 'learning_rate: 1\n', "unknown options ['learning_rate']"),
    ('c.yaml', 'config: other.yaml\n', "unknown options ['config']"),
])
def test_bad_config_file_is_named(tmp_path, name, text, message):
    config = tmp_path / name
    config.write_text(text)
    result = _run(TRAIN, SMALL + ['--config', str(config), '--out',
                                  str(tmp_path / 'out')])
    assert_one_line(result, 2, 'train.py', '--config {}: '.format(config),
                    message)


def test_missing_config_file_is_named(tmp_path):
    missing = str(tmp_path / 'nothere.yaml')
    result = _run(TRAIN, ['--config', missing])
    assert_one_line(result, 2, 'train.py', missing,
                    'No such file or directory')


# train.py: failures while running

@pytest.mark.parametrize('args, fragments', [
    (['--classes', '0-4', '--train-size', '800'],
     ['--train-size 800: the training set of digits classes 0-4 has only '
      '721 images']),
    (['--train-size', '300', '--val-split', '0.001'],
     ['--val-split 0.001: 300 training images leave 0 for validation']),
])
def test_study_set_that_cannot_be_drawn(tmp_path, args, fragments):
    result = _run(TRAIN, SMALL + args + ['--out', str(tmp_path / 'out')])
    assert_one_line(result, 1, 'train.py', *fragments)
    assert not os.path.exists(str(tmp_path / 'out'))


@pytest.mark.parametrize('optimizer', ['vogn', 'adam'])
def test_batch_larger_than_the_training_set(tmp_path, optimizer):
    result = _run(TRAIN, SMALL + ['--optimizer', optimizer, '--batchsize',
                                  '65536', '--out', str(tmp_path / 'out')])
    assert_one_line(result, 1, 'train.py', '--batchsize 65536: larger than '
                    'the training set (1437 images); use at most 1437')
    assert not os.path.exists(str(tmp_path / 'out'))


def test_batch_larger_than_a_process_shard(tmp_path, mpiexec):
    result = subprocess.run(
        mpiexec(2) + [TRAIN] + SMALL + ['--optimizer', 'adam', '--batchsize',
                                        '1000', '--out', str(tmp_path / 'out')],
        capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert ("train.py: error: --batchsize 1000: larger than each process's "
            "shard of the training set (719 images); use at most 719") in \
        result.stderr, result.stderr
    assert 'Traceback' not in result.stderr


def test_missing_mnist_names_the_option_that_downloads_it(tmp_path):
    empty = str(tmp_path / 'empty')
    result = _run(TRAIN, ['--dataset', 'mnist', '--data-dir', empty,
                          '--out', str(tmp_path / 'out')],
                  env=dict(os.environ, CHAINER_DATASET_ROOT=empty))
    line = assert_one_line(result, 1, 'train.py', 'no mnist data found',
                           '--data-dir', '(--allow-download)')
    assert 'allow_download' not in line


def test_out_under_a_regular_file(tmp_path):
    afile = tmp_path / 'afile'
    afile.write_text('keep me')
    result = _run(TRAIN, SMALL + ['--epochs', '1', '--out',
                                  str(afile / 'out')])
    assert_one_line(result, 1, 'train.py', str(afile / 'out'),
                    'Not a directory')
    assert afile.read_text() == 'keep me'


def test_device_without_a_gpu(tmp_path):
    result = _run(TRAIN, SMALL + ['--device', NO_SUCH_GPU, '--out',
                                  str(tmp_path / 'out')])
    assert_one_line(result, 1, 'train.py', '--device {}: no usable GPU'.format(
        NO_SUCH_GPU), '--device -1')


#: Runs train.py with writing config.json failing as on a full disk.
DISK_FULL = """
import errno, os, runpy, sys
from chainer_vogn import files

write_json = files.write_json

def full(path, data):
    if os.path.basename(path) != 'config.json':
        return write_json(path, data)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

files.write_json = full
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_disk_full(tmp_path):
    script = tmp_path / 'disk_full.py'
    script.write_text(DISK_FULL)
    out = tmp_path / 'out'
    result = _run(str(script), [TRAIN] + SMALL + ['--epochs', '1', '--out',
                                                   str(out)])
    assert_one_line(result, 1, 'train.py', str(out / 'config.json'),
                    'No space left on device')


#: Runs a script with the disk full for the files atomic_write writes as
#: $FULL (writes fail with ENOSPC), or for every file when $FULL is '*'
#: (syncs fail too, as on a disk whose last block is taken).
FULL_DISK = """
import errno, fnmatch, io, os, runpy, sys

full = os.environ['FULL']
fdopen, fsync = os.fdopen, os.fsync


def no_space(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class Full(io.BufferedWriter):
    write = no_space


def full_fdopen(fd, mode='r', *args, **kwargs):
    name = os.path.basename(os.readlink('/proc/self/fd/{}'.format(fd)))
    if 'w' in mode and fnmatch.fnmatch(name, '.{}.*.tmp'.format(full)):
        return Full(io.FileIO(fd, 'wb'))
    return fdopen(fd, mode, *args, **kwargs)


os.fdopen = full_fdopen
if full == '*':
    os.fsync = no_space
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def _run_on_a_full_disk(tmp_path, script, args, full):
    runner = tmp_path / 'full_disk.py'
    runner.write_text(FULL_DISK)
    return _run(str(runner), [script] + args, env=dict(os.environ,
                                                        FULL=full))


@pytest.mark.parametrize('name', ['snapshot_rank0_epoch1.npz', 'model.npz',
                                  'accuracy.png', 'log'])
def test_disk_full_names_the_file_and_leaves_none_half_written(tmp_path,
                                                               name):
    out = tmp_path / 'out'
    result = _run_on_a_full_disk(tmp_path, TRAIN, SMALL + [
        '--epochs', '1', '--out', str(out)], name)
    assert_one_line(result, 1, 'train.py', str(out / name),
                    'No space left on device')
    assert not (out / name).exists()
    assert not list(out.glob('.*.tmp'))


def test_divergence_has_no_training_loop_dump(tmp_path):
    result = _run(TRAIN, SMALL + ['--optimizer', 'sgd', '--lr', '1e6',
                                  '--epochs', '2', '--out', str(tmp_path)])
    assert result.returncode == 1
    # NumPy may warn about the NaN first; then one line and nothing else.
    last = result.stderr.splitlines()[-1]
    assert last.startswith('train.py: error: training diverged at iteration ')
    # It diverged in its first epoch, before the first snapshot.
    assert last.endswith('. No snapshot was written before it, so rerun '
                         'with a smaller --lr, in this --out or another')
    assert 'Exception in main training loop' not in result.stderr
    assert 'Traceback' not in result.stderr


#: Ctrl-C inside an import: the half-built object's destructor fails at exit.
INTERRUPTED_IMPORT = """
from chainer_vogn import errors

class HalfBuilt(object):
    def __init__(self):
        raise KeyboardInterrupt

    def __del__(self):
        self.expr  # never set: AttributeError, reported as unraisable

with errors.exit_cleanly('train.py'):
    HalfBuilt()
"""


def test_ctrl_c_during_an_import_is_still_one_line():
    result = subprocess.run([sys.executable, '-c', INTERRUPTED_IMPORT],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 130, result.stderr
    assert result.stderr == 'train.py: interrupted\n'


@pytest.mark.parametrize('command, script', [
    ([sys.executable, os.path.join(REPO, name)], name)
    for name in ('train.py', 'evaluate.py', 'predict.py')] + [
    ([os.path.join(os.path.dirname(sys.executable), 'chainer-vogn-' + name)],
     'chainer-vogn-' + name) for name in ('train', 'evaluate', 'predict')])
def test_ctrl_c_while_the_libraries_load_is_one_line(command, script):
    """SIGINT 0.15 s after the start, inside the imports of Chainer and
    SciPy: the scripts of a clone and the commands of a pip install."""
    process = subprocess.Popen(
        command + ['--help'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.15)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr == '{}: interrupted\n'.format(script)


def test_ctrl_c_exits_130_in_one_line(tmp_path):
    out = tmp_path / 'out'
    # A shell's background job ignores SIGINT; a terminal's does not.
    process = subprocess.Popen(
        [sys.executable, TRAIN] + SMALL + ['--epochs', '1000', '--out',
                                           str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_files(process, [str(out / 'log')], 240, poll=0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr == 'train.py: interrupted\n'


def test_sigterm_exits_143_in_one_line_and_the_run_resumes(tmp_path):
    """SIGTERM, as from a scheduler's walltime: one line naming the fix."""
    out = tmp_path / 'out'
    process = subprocess.Popen(
        [sys.executable, TRAIN] + SMALL + ['--epochs', '1000', '--out',
                                           str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_files(process, [str(out / 'snapshot_rank0_epoch1.npz')], 240,
                   poll=0.05)
    process.terminate()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert stderr == 'train.py: terminated; resume with --resume\n'
    result = _run(TRAIN, SMALL + ['--epochs', '1', '--out', str(out),
                                  '--resume'])
    assert result.returncode == 0, result.stderr
    assert 'resuming from epoch ' in result.stdout


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize('main, module, step', [
    ('train_main', run_options, 'parse_args'),
    ('evaluate_main', commands.mpi, 'require_mpi'),
    ('predict_main', commands, 'describe'),  # printing the results
])
def test_ctrl_c_outside_the_computation_is_one_line(
        trained_run, tmp_path, monkeypatch, capsys, main, module, step):
    """Ctrl-C while a command reads its options or prints its results."""
    numpy.save(str(tmp_path / 'one.npy'), numpy.zeros((8, 8)))
    argv = {'train_main': [], 'predict_main': [trained_run,
                                                str(tmp_path / 'one.npy')],
            'evaluate_main': [trained_run, '--out', str(tmp_path / 'r')]}
    monkeypatch.setattr(module, step, _interrupt)
    monkeypatch.setattr(sys, 'unraisablehook', sys.unraisablehook)
    with pytest.raises(SystemExit) as end:
        getattr(commands, main)(argv[main])
    assert end.value.code == 130
    program = main.split('_')[0] + '.py'
    assert capsys.readouterr().err == program + ': interrupted\n'


# Data files that are whole but not what the loaders read

def test_cifar_pickle_holding_a_list(tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()
    for name in ['data_batch_{}'.format(i) for i in range(1, 6)] + \
            ['test_batch']:
        with open(str(folder / name), 'wb') as f:
            pickle.dump([1, 2, 3], f)
    result = _run(TRAIN, ['--dataset', 'cifar10', '--data-dir',
                          str(tmp_path), '--out', str(tmp_path / 'out')])
    assert_one_line(result, 1, 'train.py', str(folder / 'data_batch_1'),
                    'got a list')


def _matlab_73_file(path):
    """The header of a MATLAB v7.3 file (an HDF5 file with a 512-byte MAT
    preamble: text, subsystem offset, version 0x0200, 'IM')."""
    text = b'MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .'
    with open(path, 'wb') as f:
        f.write(text.ljust(116) + b'\0' * 8 + b'\x00\x02IM' + b'\0' * 384)


def test_svhn_in_matlab_73_format(tmp_path):
    for name in ('train_32x32.mat', 'test_32x32.mat'):
        _matlab_73_file(str(tmp_path / name))
    result = _run(TRAIN, ['--dataset', 'svhn', '--data-dir', str(tmp_path),
                          '--out', str(tmp_path / 'out')])
    assert_one_line(result, 1, 'train.py', str(tmp_path / 'train_32x32.mat'),
                    'MATLAB v7.3')


# evaluate.py

def test_evaluate_bad_option(tmp_path):
    result = _run(EVALUATE, [str(tmp_path), '--mc-samples', '0'])
    assert_one_line(result, 2, 'evaluate.py', '--mc-samples', '>= 1')


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('run') / 'adam')
    result = _run(TRAIN, SMALL + ['--optimizer', 'adam', '--epochs', '1',
                                  '--out', folder])
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.parametrize('damage', ['config.json', 'model.npz'])
def test_evaluate_damaged_run(trained_run, tmp_path, damage):
    run = tmp_path / 'run'
    shutil.copytree(trained_run, str(run))
    if damage == 'config.json':
        run.joinpath(damage).write_text(json.dumps([1, 2]))
    else:
        run.joinpath(damage).write_bytes(b'')
    result = _run(EVALUATE, [str(run), '--out', str(tmp_path / 'report')])
    assert_one_line(result, 1, 'evaluate.py', 'run run: ', str(run))


def test_evaluate_device_without_a_gpu(trained_run, tmp_path):
    result = _run(EVALUATE, [trained_run, '--device', NO_SUCH_GPU, '--out',
                             str(tmp_path / 'report')])
    assert_one_line(result, 1, 'evaluate.py', '--device {}: no usable '
                    'GPU'.format(NO_SUCH_GPU), '--device -1')


def test_evaluate_on_a_full_disk_stops_before_computing(trained_run,
                                                        tmp_path):
    out = tmp_path / 'report'
    result = _run_on_a_full_disk(tmp_path, EVALUATE, [trained_run, '--out',
                                                      str(out)], '*')
    assert_one_line(result, 1, 'evaluate.py', '--out {}'.format(out),
                    'No space left on device')
    assert result.stdout == ''
    assert not out.exists()


@pytest.mark.parametrize('name', [files.MANIFEST, 'report.json'])
def test_evaluate_on_a_disk_that_fills_names_the_file(trained_run, tmp_path,
                                                      name):
    """The probe passes, a write of the report fails: the file is named and
    a folder left empty is removed."""
    out = tmp_path / 'report'
    result = _run_on_a_full_disk(tmp_path, EVALUATE, [trained_run, '--out',
                                                      str(out)], name)
    assert_one_line(result, 1, 'evaluate.py', str(out / name),
                    'No space left on device')
    assert out.exists() == (name != files.MANIFEST)


def test_evaluate_out_under_a_regular_file(trained_run, tmp_path):
    afile = tmp_path / 'afile'
    afile.write_text('keep me')
    result = _run(EVALUATE, [trained_run, '--out', str(afile / 'report')])
    assert_one_line(result, 1, 'evaluate.py', str(afile / 'report'),
                    'Not a directory')
    assert afile.read_text() == 'keep me'


def _out_cases(trained_run):
    """(script, its arguments but --out) of train.py and evaluate.py."""
    return {'train.py': (TRAIN, SMALL + ['--epochs', '1']),
            'evaluate.py': (EVALUATE, [trained_run])}


@pytest.mark.parametrize('program', ['train.py', 'evaluate.py'])
def test_out_naming_a_file(trained_run, tmp_path, program):
    script, args = _out_cases(trained_run)[program]
    afile = tmp_path / 'afile'
    afile.write_text('keep me')
    result = _run(script, args + ['--out', str(afile)])
    assert_one_line(result, 1, program, '--out {} is a file, not a '
                    'folder'.format(afile))
    assert afile.read_text() == 'keep me'


@pytest.mark.parametrize('program, option', [('train.py', "out: ''"),
                                             ('evaluate.py', "--out: ''")])
def test_empty_out(trained_run, tmp_path, program, option):
    script, args = _out_cases(trained_run)[program]
    result = _run(script, args + ['--out', ''], cwd=str(tmp_path))
    assert_one_line(result, 2, program, option, 'is invalid; it must be a '
                    'folder path, not empty')
    assert os.listdir(str(tmp_path)) == []


# --help

def _parser(script):
    """The parser of train.py (options') or of evaluate.py."""
    if script == TRAIN:
        return run_options.build_parser()
    return commands.evaluate_parser()


@pytest.mark.parametrize('script', [TRAIN, EVALUATE])
def test_help_describes_every_option_with_its_default(script):
    parser = _parser(script)
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.dest == 'help':
            continue
        name = '/'.join(action.option_strings) or action.dest
        assert action.help and len(action.help.split()) >= 2, name
        shown = formatter._get_help_string(action) % dict(
            vars(action), prog=parser.prog)
        if action.option_strings:
            assert 'default' in shown, (name, shown)
    assert _run(script, ['--help']).returncode == 0


# The name in usage and error lines: the command the user ran

@pytest.mark.parametrize('name', ['train', 'evaluate', 'predict'])
def test_usage_and_errors_name_the_command_as_run(name):
    """python train.py says train.py; the installed chainer-vogn-train
    (pyproject's [project.scripts]) says chainer-vogn-train."""
    console = os.path.join(os.path.dirname(sys.executable),
                           'chainer-vogn-' + name)
    if not os.path.exists(console):
        pytest.fail('{} not found: install the package (make env, or pip '
                    'install -e .)'.format(console))
    for command, prog in [([sys.executable, os.path.join(REPO, name + '.py')],
                           name + '.py'),
                          ([console], 'chainer-vogn-' + name)]:
        usage = subprocess.run(command + ['--help'], capture_output=True,
                               text=True, timeout=120)
        assert usage.returncode == 0, usage.stderr
        assert usage.stdout.startswith('usage: {} '.format(prog)), \
            usage.stdout
        error = subprocess.run(command + ['--no-such-option'],
                               capture_output=True, text=True, timeout=120)
        assert_one_line(error, 2, prog, 'error: ')
