"""Resuming a run without losing or mixing it (see docs/resuming.md).

A run folder holds ``config.json`` (rank 0 writes it) and every rank's
snapshots ``snapshot_rank<r>_epoch<e>.npz``.  :func:`plan` decides, before
anything is written, where a run starts:

* without ``--resume``, in a folder that holds no run: from scratch;
* with ``--resume``, in a folder with neither snapshot nor model: from
  scratch too (nothing can be lost);
* a run recorded with another layout or other result-deciding options is
  refused, with every difference named: continuing it would mix two runs;
* a finished run asked for no more epochs: nothing to do, nothing changed;
* otherwise from the newest epoch whose snapshot every rank has and can read.

Snapshots are written atomically and durably and older ones are removed only
once every rank holds a newer one, so some epoch is always complete on disk.
"""
import glob
import json
import os
import re
import socket
import sys
import uuid

import numpy

from chainer import serializers
from chainer import training as chainer_training

from chainer_vogn import run_options
from chainer_vogn.errors import RunError
from chainer_vogn.files import MANIFEST
from chainer_vogn.files import Manifest
from chainer_vogn.files import refuse_a_file
from chainer_vogn.files import temporaries
from chainer_vogn.files import write_json
from chainer_vogn.files import write_npz

#: Options that may differ between a run and its resumption: where and how
#: it is computed and reported, not what it computes (a GPU instead of the
#: CPU changes rounding only).  Every other option, and the number of
#: processes, must be the recorded one.
MAY_CHANGE_ON_RESUME = ('allow_download', 'communicator', 'config',
                        'data_dir', 'device', 'epochs', 'eval_batchsize',
                        'out', 'progress', 'resume', 'snapshot_interval',
                        'val_interval', 'val_samples')

#: Entries of config.json that depend on the data read, checked once the
#: data is loaded (another --data-dir must hold the same data).
DATA_KEYS = ('dataset_info', 'dataset_size')

#: The files rank 0 writes into a run folder, besides its snapshots (which
#: carry the run's identity): it overwrites them only where its manifest
#: (:class:`chainer_vogn.files.Manifest`) says it wrote them.
RUN_FILES = ('config.json', 'model.npz', 'log', 'loss.png', 'accuracy.png')

#: The entry of a snapshot that holds its run's identity (:func:`identity`).
IDENTITY = 'run_identity'

#: The lock a job holds on its run folder (:func:`acquire_lock`).
LOCK = '.chainer_vogn.lock'

#: Snapshots kept per rank: the newest, and one in case it is damaged.
N_RETAINS = 2

_SNAPSHOT_RE = re.compile(r'snapshot_rank(\d+)_epoch(\d+)\.npz$')


def snapshot_path(folder, rank, epoch):
    return os.path.join(folder, 'snapshot_rank{}_epoch{}.npz'.format(
        rank, epoch))


def find_snapshots(folder):
    """{rank: sorted epochs} of the snapshot files in ``folder``."""
    found = {}
    for path in glob.glob(os.path.join(folder, 'snapshot_rank*_epoch*.npz')):
        match = _SNAPSHOT_RE.search(os.path.basename(path))
        if match:
            found.setdefault(int(match.group(1)), []).append(
                int(match.group(2)))
    return {rank: sorted(epochs) for rank, epochs in found.items()}


def damage(path):
    """Why the npz file ``path`` cannot be read in full, or None if it can."""
    try:
        with numpy.load(path) as f:
            for key in f.files:
                f[key]
    except Exception as e:  # any failure to read makes the file unusable
        return '{} is damaged ({}: {})'.format(path, type(e).__name__, e)
    return None


def result_options(args, comm):
    """The part of a run's record that a resumption must agree with: not
    the options its optimizer does not take (older records hold VOGN's
    defaults for every optimizer)."""
    foreign = args.foreign_options()
    record = {key: value for key, value in vars(args).items()
              if key not in MAY_CHANGE_ON_RESUME and key not in foreign}
    record['processes'] = comm.size
    return _as_json(record)


def _as_json(data):
    return json.loads(json.dumps(data))


def differences(recorded, current, keys):
    """'name recorded -> now' for each of ``keys`` that differs."""
    out = []
    for key in sorted(keys):
        old, new = recorded.get(key, 'none'), current.get(key, 'none')
        if old != new:
            name = 'processes (mpiexec -n)' if key == 'processes' else \
                key if key in DATA_KEYS else '--' + key.replace('_', '-')
            out.append('{} {!r} -> {!r}'.format(name, old, new))
    return out


def _refuse_mixing(folder, diffs):
    raise RunError(
        '--resume: {} was trained with other settings ({}); a run cannot '
        'continue with another layout or other results-deciding options. '
        'Resume with the recorded ones (config.json) or choose another --out; '
        'only {} may change on resume'.format(
            folder, '; '.join(diffs), ', '.join(
                run_options.flag(k) for k in MAY_CHANGE_ON_RESUME
                if k not in ('resume', 'out'))))


def _read_record(folder):
    """config.json of the run in ``folder``, or the reason it has none."""
    path = os.path.join(folder, 'config.json')
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        return None, '{}: {}'.format(path, e)
    if not isinstance(record, dict):
        return None, '{}: not a mapping'.format(path)
    return record, None


def _run_manifest(folder):
    """The manifest of the run folder ``folder``.  A run written before
    manifests existed (its config.json a train.py record) owns the files of
    :data:`RUN_FILES` it holds."""
    manifest = Manifest(folder)
    if not os.path.exists(manifest.path):
        record, _ = _read_record(folder)
        if record is not None and 'versions' in record:
            manifest.names |= set(RUN_FILES)
    return manifest


class Plan(object):
    """Where a run starts: ``epoch`` of its snapshot (None: from scratch),
    or ``finished`` when there is nothing to do; ``run_id`` names the run
    (None for one recorded before runs had ids).  It holds the folder's
    lock until :meth:`release`."""

    def __init__(self, folder, lock, run_id, epoch=None, recorded=None,
                 finished=False):
        self.folder = folder
        self.lock = lock
        self.run_id = run_id
        self.epoch = epoch
        self.recorded = recorded
        self.finished = finished

    def identity(self, args, comm):
        """What each snapshot of this rank carries (:func:`identity`)."""
        return identity(self.run_id, args, comm)

    def release(self):
        if self.lock is not None:
            release_lock(*self.lock)

    def start(self, trainer, comm, record):
        """Load the snapshot, clear litter and abandoned snapshots, and only
        then write ``record`` as config.json (rank 0)."""
        if self.epoch is not None:
            diffs = differences(self.recorded, _as_json(record), DATA_KEYS)
            if diffs:
                _refuse_mixing(self.folder, diffs)
            path = snapshot_path(self.folder, comm.rank, self.epoch)
            try:
                serializers.load_npz(path, trainer)
            except (KeyError, ValueError) as e:
                raise RunError(
                    '--resume: {} does not fit this run ({}: {})'.format(
                        path, type(e).__name__, e))
            comm.mpi_comm.barrier()
            # Epochs after the one resumed from are incomplete or damaged
            # (plan refused any of another run).
            for epoch in find_snapshots(self.folder).get(comm.rank, []):
                if epoch > self.epoch:
                    os.remove(snapshot_path(self.folder, comm.rank, epoch))
        remove_temporaries(self.folder, comm.rank)
        if comm.rank == 0:
            _run_manifest(self.folder).claim(RUN_FILES)
            write_json(os.path.join(self.folder, 'config.json'), record)
            if self.epoch is not None:
                print('resuming from epoch {}'.format(self.epoch))
            sys.stdout.flush()


def plan(args, comm):
    """Lock ``args.out``, check it against ``args`` on every rank and return
    the :class:`Plan`; raise RunError (the same on every rank) when the run
    there would be lost or mixed, or another job holds the folder."""
    lock = _on_rank0(comm, lambda: acquire_lock(args.out))
    try:
        return _plan(args, comm, lock)
    except BaseException:
        if lock is not None:
            release_lock(*lock)
        raise


def _on_rank0(comm, work):
    """``work()`` on rank 0; its RunError is raised on every rank alike.
    Returns what it returned on rank 0, None elsewhere."""
    result, error = None, None
    if comm.rank == 0:
        try:
            result = work()
        except RunError as e:
            error = str(e)
    error = comm.mpi_comm.bcast(error, root=0)
    if error is not None:
        raise RunError(error)
    return result


def _plan(args, comm, lock):
    folder = args.out
    _on_rank0(comm, lambda: _run_manifest(folder).refuse_foreign(RUN_FILES))
    if comm.rank == 0:
        found = (find_snapshots(folder),
                 os.path.exists(os.path.join(folder, 'model.npz')),
                 uuid.uuid4().hex)
    else:
        found = None
    snapshots, has_model, new_id = comm.mpi_comm.bcast(found, root=0)
    if not args.resume:
        if snapshots or has_model:
            raise RunError(
                '--out {} already holds a run ({}); pass --resume to continue '
                'it or choose another --out'.format(folder, ', '.join(
                    (['model.npz'] if has_model else []) +
                    (['snapshots'] if snapshots else []))))
        return Plan(folder, lock, new_id)
    if not snapshots and not has_model:
        if comm.rank == 0:
            print('no snapshot in {}: starting afresh'.format(folder))
        return Plan(folder, lock, new_id)

    recorded, why = _read_record(folder)
    if recorded is None:
        raise RunError(
            '--resume: {} holds a run but its record cannot be read ({}), so '
            'the options cannot be checked; choose another --out'.format(
                folder, why))
    current = result_options(args, comm)
    diffs = _option_differences(recorded, current)
    foreign = sorted(r for r in snapshots if r >= comm.size)
    if foreign and not diffs:
        diffs = ['snapshots of ranks {} but {} processes'.format(
            foreign, comm.size)]
    if diffs:
        _refuse_mixing(folder, diffs)
    if recorded.get('finished') and args.epochs <= recorded.get('epochs', 0):
        if comm.rank == 0:
            print('{} already finished its {} epochs: nothing to do (a larger '
                  '--epochs trains on)'.format(folder, recorded['epochs']))
        return Plan(folder, lock, recorded.get('run_id'), finished=True)
    if not snapshots:
        if recorded.get('finished'):
            raise RunError(
                '--resume --epochs: {} finished and keeps no snapshot to '
                'train on from; choose another --out for a longer '
                'run'.format(folder))
        if comm.rank == 0:
            print('no snapshot in {}: starting afresh'.format(folder))
        return Plan(folder, lock, new_id)
    run_id = recorded.get('run_id')
    _refuse_other_runs(folder, snapshots, identity(run_id, args, comm), comm)
    epoch = newest_complete_epoch(folder, snapshots, comm)
    if epoch > args.epochs:
        raise RunError(
            '--resume --epochs {}: {} is at epoch {} already; pass --epochs '
            '{} or more'.format(args.epochs, folder, epoch, epoch))
    return Plan(folder, lock, run_id, epoch, recorded)


def _option_differences(recorded, current):
    """:func:`differences` of the result-deciding options; a record older
    than an option ran with that option's default."""
    return differences(dict(_as_json(run_options.general_defaults()),
                            **recorded), current, current)


def identity(run_id, args, comm):
    """What a snapshot carries to tell its run: the run id (written when
    the run starts), this rank's place in the layout and the result-deciding
    options."""
    return {'run_id': run_id, 'rank': comm.rank, 'processes': comm.size,
            'options': result_options(args, comm)}


def read_identity(path):
    """The identity a snapshot carries; None for one written before
    snapshots carried it.  Raises what numpy.load raises on a damaged
    file."""
    with numpy.load(path) as f:
        if IDENTITY not in f.files:
            return None
        return json.loads(str(f[IDENTITY]))


def _other_run(path, expected):
    """Why the snapshot ``path`` is not of the run ``expected`` describes,
    or None (a damaged file is left to :func:`damage`)."""
    try:
        found = read_identity(path)
    except Exception:  # damaged: newest_complete_epoch names it
        return None
    if found is None:  # written before snapshots carried an identity
        return None if expected['run_id'] is None else \
            'no run id where the folder\'s run is {}'.format(
                expected['run_id'])
    if found.get('run_id') != expected['run_id']:
        return 'run id {} where the folder\'s run is {}'.format(
            found.get('run_id'), expected['run_id'])
    if found.get('rank') != expected['rank'] or \
            found.get('processes') != expected['processes']:
        return 'rank {} of {} processes where this is rank {} of {}'.format(
            found.get('rank'), found.get('processes'), expected['rank'],
            expected['processes'])
    diffs = _option_differences(found.get('options', {}),
                                expected['options'])
    return 'options ' + '; '.join(diffs) if diffs else None


def _refuse_other_runs(folder, snapshots, expected, comm):
    """RunError naming every snapshot of this layout's ranks that belongs
    to another run (each rank checks its own)."""
    mine = [snapshot_path(folder, comm.rank, epoch)
            for epoch in snapshots.get(comm.rank, [])]
    problems = ['{} ({})'.format(path, why) for path, why in
                ((path, _other_run(path, expected)) for path in mine) if why]
    problems = sum(comm.mpi_comm.allgather(problems), [])
    if problems:
        raise RunError(
            '--resume: {} {} of another run than the one in {}; a run cannot '
            'continue from another\'s snapshots: put this run\'s back or '
            'choose another --out'.format(
                '; '.join(problems), 'is a snapshot' if len(problems) == 1
                else 'are snapshots', folder))


def newest_complete_epoch(folder, snapshots, comm):
    """The newest epoch whose snapshot every rank has and can read.

    Damaged files are named on stderr; RunError when there is no such epoch.
    """
    ranks = range(comm.size)
    without = [r for r in ranks if not snapshots.get(r)]
    if without:
        raise RunError(
            '--resume: in {}, ranks {} have no snapshot while ranks {} have; '
            'the folder was written by another layout or files were removed, '
            'so the run cannot continue: choose another --out'.format(
                folder, without, [r for r in ranks if r not in without]))
    common = set.intersection(*(set(snapshots[r]) for r in ranks))
    damaged = []
    for epoch in sorted(common, reverse=True):
        problem = damage(snapshot_path(folder, comm.rank, epoch))
        problems = [p for p in comm.mpi_comm.allgather(problem) if p]
        damaged += problems
        if not problems:
            if damaged and comm.rank == 0:
                sys.stderr.write('warning: {}; resuming from epoch {}, the '
                                 'newest every rank can read\n'.format(
                                     '; '.join(damaged), epoch))
            return epoch
    raise RunError(
        '--resume: {} has no epoch whose snapshot every rank has and can read '
        '(snapshot epochs by rank: {}{}); choose another --out'.format(
            folder, {r: snapshots[r] for r in ranks},
            '; ' + '; '.join(damaged) if damaged else ''))


def remove_temporaries(folder, rank):
    """Remove the temporaries that killed writers of this run left (see
    :func:`chainer_vogn.files.temporaries`): this rank's snapshots', and on
    rank 0 those of the files of :data:`RUN_FILES` and of the manifest."""
    bases = [os.path.basename(snapshot_path(folder, rank, '*'))]
    if rank == 0:
        bases += list(RUN_FILES) + [MANIFEST]
    for base in bases:
        for path in glob.glob(os.path.join(folder, temporaries(base))):
            os.remove(path)


def acquire_lock(folder):
    """Hold the run folder ``folder`` (created if needed) for this job;
    returns (the lock's path, whether the folder was created) for
    :func:`release_lock`.  RunError, naming the job, when another live job
    holds it; the lock of a job whose process is gone from this host is
    stale and taken over."""
    refuse_a_file(folder)
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        holder = _lock_holder(path)
        if holder.get('host') != socket.gethostname() or \
                _alive(holder.get('pid')):
            raise RunError(
                '--out {} is in use by another job (pid {} on host {}, {}); '
                'wait for it to end, or remove {} if no job runs '
                'there'.format(folder, holder.get('pid'), holder.get('host'),
                               path, path))
        sys.stderr.write('warning: taking over the lock {} of pid {}, which '
                         'has ended\n'.format(path, holder['pid']))
        write_json(path, _this_job())
    else:
        with os.fdopen(fd, 'w') as f:
            json.dump(_this_job(), f)
    return path, created


def release_lock(path, created):
    """Remove the lock ``path`` if this job holds it, and the folder if
    the job created it and left it empty (a run that failed to start)."""
    if _lock_holder(path) == _this_job():
        os.remove(path)
    if created:
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass  # not empty: the run's files are in it


def _this_job():
    return {'host': socket.gethostname(), 'pid': os.getpid()}


def _lock_holder(path):
    """{'host', 'pid'} of the job holding the lock ``path``; {} when it
    cannot be read."""
    try:
        with open(path) as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(pid):
    """Whether a process ``pid`` runs on this host.  A killed rank whose
    parent (mpiexec) was killed too can stay a zombie, unreaped, for a
    while or for good in a container: it holds nothing, so it is dead."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    return process_state(pid) not in ('Z', 'X', 'gone')


def process_state(pid):
    """The state letter of process ``pid`` from /proc ('R', 'S', 'Z', ...),
    'gone' when it has no entry, None where there is no /proc (not Linux)."""
    try:
        with open('/proc/{}/stat'.format(pid)) as f:
            return f.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return 'gone' if os.path.isdir('/proc/self') else None


class Snapshot(chainer_training.Extension):
    """Write this rank's snapshot, carrying ``identity``, atomically and
    durably, then, once every rank has written it, drop this rank's
    snapshots older than the newest ``N_RETAINS``, so that an epoch
    complete on every rank always stays."""

    priority = -100  # after the other extensions, as Chainer's snapshot

    def __init__(self, comm, folder, identity):
        self.comm = comm
        self.folder = folder
        self.identity = identity

    def __call__(self, trainer):
        epoch = trainer.updater.epoch
        # What serializers.save_npz writes, with the identity.
        serializer = serializers.DictionarySerializer()
        serializer.save(trainer)
        serializer.target[IDENTITY] = numpy.array(json.dumps(
            self.identity, sort_keys=True))
        write_npz(snapshot_path(self.folder, self.comm.rank, epoch),
                  serializer.target, compressed=True)
        self.comm.mpi_comm.barrier()
        epochs = [e for e in find_snapshots(self.folder).get(
            self.comm.rank, []) if e <= epoch]
        for old in epochs[:-N_RETAINS]:
            os.remove(snapshot_path(self.folder, self.comm.rank, old))
