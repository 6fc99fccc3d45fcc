"""Faults around resuming: kills at any point, damaged snapshots, other
layouts and edited options.  A run must either continue to the result an
uninterrupted run gets, or stop with one message and leave every file of
the run as it was.

Small and fast on purpose: digits, the MLP, three epochs, two processes.
"""
import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy
import pytest

from chainer_vogn import checkpoint
from chainer_vogn import errors
from chainer_vogn import files
from chainer_vogn import run_options
from chainer_vogn import training

from conftest import assert_same_posterior
from conftest import mpiexec_command
from conftest import wait_for_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, 'train.py')
FAULT_WORKER = os.path.join(REPO, 'tests', 'fault_worker.py')
OPTIONS = ['--dataset', 'digits', '--arch', 'mlp', '--no-progress',
           '--prior-precision', '50']
#: The reference run under mpiexec: P = 2 processes, S = 2 sample groups.
MPI_RUN = OPTIONS + ['--samples', '2', '--epochs', '3']
SOLO_RUN = OPTIONS + ['--epochs', '2']


def _run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True,
                          timeout=300, **kwargs)


def _contents(folder):
    """{file name: sha256} of everything in ``folder``."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(
                    f.read()).hexdigest()
    return out


def _assert_no_litter(folder):
    assert not [n for n in os.listdir(folder) if n.endswith('.tmp')]


#: Files and folders of the user's in a run folder, named like the ones the
#: project writes or once wrote (Chainer's temporary folders).
USERS_FILES = {'logs/log': b'my notes', 'tmpsnapshot_rank0_epoch1.npzabc/x':
               b'mine', 'log.tmp': b'mine too'}


def _add_users_files(folder):
    for name, data in USERS_FILES.items():
        os.makedirs(os.path.dirname(os.path.join(folder, name)) or folder,
                    exist_ok=True)
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(data)
    os.mkdir(os.path.join(folder, 'logbook'))
    return {name: digest for name, digest in _contents(folder).items()
            if name in USERS_FILES}


def _assert_users_files_untouched(folder, hashes):
    assert {name: digest for name, digest in _contents(folder).items()
            if name in USERS_FILES} == hashes
    assert os.listdir(os.path.join(folder, 'logbook')) == []


@pytest.fixture(scope='module')
def mpi_reference(tmp_path_factory):
    """An uninterrupted, finished P = 2, S = 2 run."""
    folder = str(tmp_path_factory.mktemp('faults') / 'reference')
    result = _run(mpiexec_command(2) + [TRAIN] + MPI_RUN + ['--out', folder])
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope='module')
def solo_reference(tmp_path_factory):
    """A finished one-process run."""
    folder = str(tmp_path_factory.mktemp('faults') / 'solo')
    result = _run([sys.executable, TRAIN] + SOLO_RUN + ['--out', folder])
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def in_process(monkeypatch):
    """training.run in this process, without MPI's abort on errors."""
    monkeypatch.setattr(training.distributed, 'abort_on_uncaught_exception',
                        lambda: None)
    return lambda argv: training.run(run_options.parse_args(argv))


def _copy(folder, tmp_path):
    return shutil.copytree(folder, str(tmp_path / 'run'))


# Kills: the resumed run ends exactly where the uninterrupted one did

def _kill_job(proc):
    """SIGKILL mpiexec and its ranks, as a scheduler's walltime does."""
    ranks = [int(pid) for pid in os.listdir('/proc') if pid.isdigit()
             and _parent(pid) == proc.pid]
    for pid in [proc.pid] + ranks:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    # SIGKILL is asynchronous: as a scheduler, wait until the ranks are gone
    # (or zombies nobody reaps) before the next job starts
    deadline = time.time() + 30
    while any(checkpoint.process_state(pid) not in ('Z', 'X', 'gone')
              for pid in ranks):
        assert time.time() < deadline, 'killed ranks still run'
        time.sleep(0.01)


def test_ctrl_c_to_mpiexec_is_one_line_then_resumed_equals_uninterrupted(
        mpiexec, mpi_reference, tmp_path):
    """Ctrl-C to mpiexec: Open MPI's mpiexec sends the ranks SIGTERM, then
    SIGKILL, and forwards no more output; rank 0 alone says so, on
    mpiexec's stderr, and the run resumes."""
    folder = str(tmp_path / 'run')
    proc = subprocess.Popen(
        mpiexec(2) + [TRAIN] + MPI_RUN + ['--out', folder],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_files(proc, [checkpoint.snapshot_path(folder, rank, 1)
                          for rank in (0, 1)], 120, poll=0.005)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert stderr == 'train.py: terminated; resume with --resume\n'

    result = _run(mpiexec(2) + [TRAIN] + MPI_RUN + ['--out', folder,
                                                     '--resume'])
    assert result.returncode == 0, result.stderr
    assert_same_posterior(folder, mpi_reference)
    _assert_no_litter(folder)


def _parent(pid):
    try:
        with open('/proc/{}/stat'.format(pid)) as f:
            return int(f.read().rsplit(')', 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.parametrize('fault', [
    'snapshot_rank1_epoch2.npz:1',    # rank 1 dies writing a snapshot
    'config.json:1',                  # rank 0 dies writing the first record
    'model.npz:1',                    # ... writing the model at the end
    'config.json:2',                  # ... writing the final record
])
def test_killed_while_writing_then_resumed_equals_uninterrupted(
        mpiexec, mpi_reference, tmp_path, fault):
    folder = str(tmp_path / 'run')
    killed = _run(mpiexec(2) + [FAULT_WORKER] + MPI_RUN + ['--out', folder],
                  env=dict(os.environ, FAULT=fault))
    assert killed.returncode != 0, 'the fault did not happen: ' + fault
    assert any(n.endswith('.tmp') for n in os.listdir(folder))
    users = _add_users_files(folder)

    result = _run(mpiexec(2) + [TRAIN] + MPI_RUN + ['--out', folder,
                                                     '--resume'])
    assert result.returncode == 0, result.stderr
    assert_same_posterior(folder, mpi_reference)
    with open(os.path.join(folder, 'config.json')) as f:
        assert json.load(f)['finished']
    assert [n for n in os.listdir(folder) if n.endswith('.tmp')] == \
        ['log.tmp']
    _assert_users_files_untouched(folder, users)


def test_killed_at_a_random_time_then_resumed_equals_uninterrupted(
        mpiexec, mpi_reference, tmp_path):
    seed = random.randrange(10 ** 6)
    folder = str(tmp_path / 'run')
    proc = subprocess.Popen(mpiexec(2) + [TRAIN] + MPI_RUN + ['--out', folder],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_files(proc, [os.path.join(folder, 'snapshot_rank0_epoch1.npz')],
                   120, poll=0.005)
    time.sleep(random.Random(seed).uniform(0, 1.5))
    _kill_job(proc)

    result = _run(mpiexec(2) + [TRAIN] + MPI_RUN + ['--out', folder,
                                                     '--resume'])
    assert result.returncode == 0, 'seed {}: {}'.format(seed, result.stderr)
    assert_same_posterior(folder, mpi_reference)
    _assert_no_litter(folder)


def test_damaged_newest_snapshot_falls_back_to_the_epoch_before(
        mpiexec, mpi_reference, tmp_path):
    """Rank 1 dies writing epoch 3 and its epoch-2 file is truncated: epoch
    1 must still be on disk on both ranks, and the run continues from it."""
    folder = str(tmp_path / 'run')
    killed = _run(mpiexec(2) + [FAULT_WORKER] + MPI_RUN + ['--out', folder],
                  env=dict(os.environ, FAULT='snapshot_rank1_epoch3.npz:1'))
    assert killed.returncode != 0
    damaged = checkpoint.snapshot_path(folder, 1, 2)
    with open(damaged, 'r+b') as f:
        f.truncate(1000)

    result = _run(mpiexec(2) + [TRAIN] + MPI_RUN + ['--out', folder,
                                                     '--resume'])
    assert result.returncode == 0, result.stderr
    assert damaged + ' is damaged' in result.stderr
    assert 'resuming from epoch 1' in result.stdout
    assert_same_posterior(folder, mpi_reference)


# Refusals: one message, and not one file of the run changed

@pytest.mark.parametrize('processes, options, message', [
    (4, ['--samples', '2'], "processes (mpiexec -n) 2 -> 4"),
    (2, ['--samples', '1'], "--samples 2 -> 1"),
    (1, ['--samples', '1'], "processes (mpiexec -n) 2 -> 1"),
])
def test_other_layout_is_refused_and_changes_nothing(
        mpiexec, mpi_reference, tmp_path, processes, options, message):
    folder = _copy(mpi_reference, tmp_path)
    before = _contents(folder)
    result = _run(mpiexec(processes) + [TRAIN] + MPI_RUN + options + [
        '--out', folder, '--resume', '--epochs', '6'])
    assert result.returncode != 0
    assert message in result.stderr
    assert 'Traceback' not in result.stderr
    assert _contents(folder) == before


def test_rank_without_snapshots_is_an_error_not_a_fresh_start(
        mpiexec, mpi_reference, tmp_path):
    folder = _copy(mpi_reference, tmp_path)
    for epoch in (2, 3):
        os.remove(checkpoint.snapshot_path(folder, 1, epoch))
    before = _contents(folder)
    result = _run(mpiexec(2) + [TRAIN] + MPI_RUN + ['--out', folder,
                                                     '--resume', '--epochs',
                                                     '4'])
    assert result.returncode != 0
    assert 'ranks [1] have no snapshot' in result.stderr
    assert _contents(folder) == before


def test_longer_run_of_a_finished_run_without_snapshots_is_refused(
        solo_reference, tmp_path, in_process):
    """A finished run whose snapshots were removed has nothing to train on
    from: --resume with more epochs says so instead of starting afresh
    over the finished run's files."""
    folder = _copy(solo_reference, tmp_path)
    for path in glob.glob(os.path.join(folder, 'snapshot_*')):
        os.remove(path)
    before = _contents(folder)
    with pytest.raises(errors.RunError, match='finished and keeps no '
                       'snapshot to train on from'):
        in_process(OPTIONS + ['--epochs', '5', '--out', folder, '--resume'])
    assert _contents(folder) == before


def test_edited_options_are_all_named_and_change_nothing(
        solo_reference, tmp_path, in_process):
    folder = _copy(solo_reference, tmp_path)
    before = _contents(folder)
    with pytest.raises(errors.RunError) as error:
        in_process(SOLO_RUN + ['--out', folder, '--resume', '--classes',
                               '0-4', '--lr', '0.5', '--epochs', '5'])
    message = str(error.value)
    assert "--classes None -> '0-4'" in message
    assert '--lr None -> 0.5' in message  # None: VOGN's derived lr
    assert '--epochs' not in message.split('only')[0]
    # The options that may change, as the user types them.
    may_change = message.split('only ')[1].split(' may change')[0].split(', ')
    assert '--no-progress' in may_change
    assert set(may_change) <= set(run_options.build_parser()
                                  ._option_string_actions)
    assert _contents(folder) == before


@pytest.mark.parametrize('epochs', ['2', '1'])
def test_finished_run_says_so_and_changes_nothing(
        solo_reference, tmp_path, in_process, capsys, epochs):
    folder = _copy(solo_reference, tmp_path)
    before = _contents(folder)
    argv = list(SOLO_RUN)
    argv[argv.index('--epochs') + 1] = epochs
    assert in_process(argv + ['--out', folder, '--resume']) is None
    assert 'already finished its 2 epochs' in capsys.readouterr().out
    assert _contents(folder) == before


def test_no_readable_snapshot_anywhere_is_refused(
        solo_reference, tmp_path, in_process):
    folder = _copy(solo_reference, tmp_path)
    for epoch in (1, 2):
        with open(checkpoint.snapshot_path(folder, 0, epoch), 'r+b') as f:
            f.truncate(100)
    before = _contents(folder)
    with pytest.raises(errors.RunError, match='no epoch whose snapshot '
                       'every rank has and can read.*epoch2.npz is damaged'):
        in_process(SOLO_RUN[:-1] + ['4', '--out', folder, '--resume'])
    assert _contents(folder) == before


def test_unreadable_record_is_refused(solo_reference, tmp_path, in_process):
    folder = _copy(solo_reference, tmp_path)
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        f.write('{"optimizer": ')
    before = _contents(folder)
    with pytest.raises(errors.RunError, match='config.json'):
        in_process(SOLO_RUN + ['--out', folder, '--resume'])
    assert _contents(folder) == before


def test_longer_run_continues_from_the_finished_one(
        solo_reference, tmp_path, in_process):
    """--epochs may grow on resume: 2 + 1 epochs equal 3 epochs at once."""
    folder = _copy(solo_reference, tmp_path)
    longer = SOLO_RUN[:-1] + ['3']
    in_process(longer + ['--out', folder, '--resume'])
    whole = str(tmp_path / 'whole')
    in_process(longer + ['--out', whole])
    assert_same_posterior(folder, whole)
    assert [e['epoch'] for e in json.load(open(os.path.join(
        folder, 'log')))] == [1, 2, 3]
    # Retention keeps the two newest epochs.
    assert checkpoint.find_snapshots(folder) == {0: [2, 3]}


# Only the run's own: the user's files stay, another run's snapshots and a
# second job are refused

def test_resume_leaves_the_users_files_in_the_run_folder(
        solo_reference, tmp_path, in_process):
    folder = _copy(solo_reference, tmp_path)
    users = _add_users_files(folder)
    in_process(OPTIONS + ['--epochs', '5', '--out', folder, '--resume'])
    _assert_users_files_untouched(folder, users)
    assert json.load(open(os.path.join(folder, 'config.json')))['finished']


def test_run_from_before_manifests_and_run_ids_resumes(
        solo_reference, tmp_path, in_process):
    """A run folder written before runs had a manifest, a run id and
    snapshots carrying it is still this run's: it resumes."""
    folder = _copy(solo_reference, tmp_path)
    os.remove(os.path.join(folder, files.MANIFEST))
    path = os.path.join(folder, 'config.json')
    record = json.load(open(path))
    del record['run_id']
    files.write_json(path, record)
    for path in glob.glob(os.path.join(folder, 'snapshot_*.npz')):
        with numpy.load(path) as f:
            arrays = {k: f[k] for k in f.files if k != checkpoint.IDENTITY}
        numpy.savez_compressed(path, **arrays)
    in_process(OPTIONS + ['--epochs', '3', '--out', folder, '--resume'])
    assert json.load(open(os.path.join(folder, 'config.json')))['finished']


def test_a_file_of_the_users_named_like_the_runs_is_not_overwritten(
        tmp_path, in_process):
    folder = tmp_path / 'run'
    folder.mkdir()
    (folder / 'log').write_text('my log')
    with pytest.raises(errors.RunError, match=r'--out .*run: log is not '
                       'written there by chainer_vogn .*move it away'):
        in_process(SOLO_RUN + ['--out', str(folder)])
    assert _contents(str(folder)) == {'log': hashlib.sha256(
        b'my log').hexdigest()}


def test_snapshot_of_another_run_is_refused_naming_it(
        mpiexec, mpi_reference, tmp_path):
    """Rank 1's epoch-2 snapshot replaced by the same epoch of a run of the
    same layout with --seed 1: the resume names it and changes nothing."""
    other = str(tmp_path / 'seed1')
    result = _run(mpiexec(2) + [TRAIN] + MPI_RUN + ['--seed', '1',
                                                     '--epochs', '2',
                                                     '--out', other])
    assert result.returncode == 0, result.stderr
    folder = _copy(mpi_reference, tmp_path)
    foreign = checkpoint.snapshot_path(folder, 1, 2)
    shutil.copyfile(checkpoint.snapshot_path(other, 1, 2), foreign)
    before = _contents(folder)
    result = _run(mpiexec(2) + [TRAIN] + MPI_RUN + ['--out', folder,
                                                     '--resume', '--epochs',
                                                     '4'])
    assert result.returncode != 0
    assert '--resume: {} (run id '.format(foreign) in result.stderr
    assert 'is a snapshot of another run' in result.stderr
    assert 'Traceback' not in result.stderr
    assert _contents(folder) == before


def test_second_job_on_a_run_folder_is_refused_and_a_dead_ones_lock_taken(
        tmp_path):
    folder = str(tmp_path / 'run')
    long_run = [sys.executable, TRAIN] + OPTIONS + ['--epochs', '60',
                                                    '--out', folder]
    first = subprocess.Popen(long_run, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for_files(first, [checkpoint.snapshot_path(folder, 0, 1)], 120)
        second = _run(long_run + ['--resume'])
        assert first.poll() is None, 'the first job ended too soon'
    finally:
        _kill_job(first)
    assert second.returncode == 1
    assert re.fullmatch(
        r'train.py: error: --out {} is in use by another job \(pid {} on '
        r'host .*\n'.format(re.escape(folder), first.pid), second.stderr), \
        second.stderr
    newest = str(max(checkpoint.find_snapshots(folder)[0]))
    third = _run(long_run[:-3] + [newest, '--out', folder, '--resume'])
    assert third.returncode == 0, third.stderr
    assert 'taking over the lock' in third.stderr
    assert not os.path.exists(os.path.join(folder, checkpoint.LOCK))


def test_lock_of_a_zombie_is_taken_over(tmp_path):
    """A killed rank whose mpiexec died too can linger as a zombie that
    nobody reaps; it holds nothing, so its lock is stale."""
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    deadline = time.time() + 30
    while checkpoint.process_state(child.pid) != 'Z':  # ended, not reaped
        assert time.time() < deadline
        time.sleep(0.01)
    try:
        folder = str(tmp_path / 'run')
        os.makedirs(folder)
        lock = os.path.join(folder, checkpoint.LOCK)
        with open(lock, 'w') as f:
            json.dump({'host': checkpoint.socket.gethostname(),
                       'pid': child.pid}, f)
        path, created = checkpoint.acquire_lock(folder)
        assert (path, created) == (lock, False)
        with open(lock) as f:
            assert json.load(f)['pid'] == os.getpid()
        checkpoint.release_lock(path, created)
        assert not os.path.exists(lock)
    finally:
        child.wait()
