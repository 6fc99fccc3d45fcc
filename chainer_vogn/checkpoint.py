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
import shutil
import sys

import numpy

from chainer import serializers
from chainer import training as chainer_training

from chainer_vogn import run_options
from chainer_vogn.errors import RunError
from chainer_vogn.files import atomic_write
from chainer_vogn.files import temporaries
from chainer_vogn.files import write_json

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
                '--' + k.replace('_', '-') for k in MAY_CHANGE_ON_RESUME
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


class Plan(object):
    """Where a run starts: ``epoch`` of its snapshot (None: from scratch),
    or ``finished`` when there is nothing to do."""

    def __init__(self, folder, epoch=None, recorded=None, finished=False):
        self.folder = folder
        self.epoch = epoch
        self.recorded = recorded
        self.finished = finished

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
            # Epochs after the one resumed from are incomplete or damaged.
            for epoch in find_snapshots(self.folder).get(comm.rank, []):
                if epoch > self.epoch:
                    os.remove(snapshot_path(self.folder, comm.rank, epoch))
        remove_temporaries(self.folder, comm.rank)
        if comm.rank == 0:
            write_json(os.path.join(self.folder, 'config.json'),
                                record)
            if self.epoch is not None:
                print('resuming from epoch {}'.format(self.epoch))
            sys.stdout.flush()


def plan(args, comm):
    """Check ``args.out`` against ``args`` on every rank and return the
    :class:`Plan`; raise RunError (the same on every rank) when the run
    there would be lost or mixed."""
    folder = args.out
    if comm.rank == 0:
        found = (find_snapshots(folder),
                 os.path.exists(os.path.join(folder, 'model.npz')))
    else:
        found = None
    snapshots, has_model = comm.mpi_comm.bcast(found, root=0)
    if not args.resume:
        if snapshots or has_model:
            raise RunError(
                '--out {} already holds a run ({}); pass --resume to continue '
                'it or choose another --out'.format(folder, ', '.join(
                    (['model.npz'] if has_model else []) +
                    (['snapshots'] if snapshots else []))))
        return Plan(folder)
    if not snapshots and not has_model:
        if comm.rank == 0:
            print('no snapshot in {}: starting afresh'.format(folder))
        return Plan(folder)

    recorded, why = _read_record(folder)
    if recorded is None:
        raise RunError(
            '--resume: {} holds a run but its record cannot be read ({}), so '
            'the options cannot be checked; choose another --out'.format(
                folder, why))
    current = result_options(args, comm)
    # A record older than an option ran with that option's default.
    diffs = differences(dict(_as_json(run_options.general_defaults()),
                             **recorded), current, current)
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
        return Plan(folder, finished=True)
    if not snapshots:
        if recorded.get('finished'):
            raise RunError(
                '--resume --epochs: {} finished and keeps no snapshot to '
                'train on from; choose another --out for a longer '
                'run'.format(folder))
        if comm.rank == 0:
            print('no snapshot in {}: starting afresh'.format(folder))
        return Plan(folder)
    epoch = newest_complete_epoch(folder, snapshots, comm)
    if epoch > args.epochs:
        raise RunError(
            '--resume --epochs {}: {} is at epoch {} already; pass --epochs '
            '{} or more'.format(args.epochs, folder, epoch, epoch))
    return Plan(folder, epoch, recorded)


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
    """Remove what killed writers of this run left: this rank's temporary
    snapshots, and on rank 0 those of config.json, model.npz, the log and
    Chainer's snapshot writer."""
    if rank == 0:
        patterns = [temporaries('config.json'),
                    temporaries('model.npz')]
        for path in glob.glob(os.path.join(folder, 'tmpsnapshot_*')) + \
                glob.glob(os.path.join(folder, 'log*')):
            if os.path.isdir(path) and set(os.listdir(path)) <= {'log'}:
                shutil.rmtree(path)
    else:
        patterns = []
    patterns.append(temporaries(
        os.path.basename(snapshot_path(folder, rank, '*'))))
    for pattern in patterns:
        for path in glob.glob(os.path.join(folder, pattern)):
            os.remove(path)


class Snapshot(chainer_training.Extension):
    """Write this rank's snapshot atomically and durably, then, once every
    rank has written it, drop this rank's snapshots older than the newest
    ``N_RETAINS``, so that an epoch complete on every rank always stays."""

    priority = -100  # after the other extensions, as Chainer's snapshot

    def __init__(self, comm, folder):
        self.comm = comm
        self.folder = folder

    def __call__(self, trainer):
        epoch = trainer.updater.epoch
        atomic_write(snapshot_path(self.folder, self.comm.rank, epoch),
                     lambda f: serializers.save_npz(f, trainer), binary=True)
        self.comm.mpi_comm.barrier()
        epochs = [e for e in find_snapshots(self.folder).get(
            self.comm.rank, []) if e <= epoch]
        for old in epochs[:-N_RETAINS]:
            os.remove(snapshot_path(self.folder, self.comm.rank, old))
