"""Writing result files so that a crash never leaves half a file behind."""
import io
import json
import os
import uuid

import numpy

from chainer_vogn.errors import RunError


#: The temporary file atomic_write writes before it moves it over the
#: file named by its base name: '.<base>.<random hex>.tmp'.
_TEMPORARY = '.{}.{}.tmp'


def temporaries(base):
    """The glob pattern of the temporaries atomic_write leaves next to a
    file named ``base`` when it is killed (``base`` may hold a glob): their
    random part of 32 hex digits marks them as atomic_write's."""
    return _TEMPORARY.format(base, '[0-9a-f]' * 32)


def atomic_write(path, write, binary=False):
    """Call ``write(f)`` on a temporary file next to ``path``, sync it to
    the disk, then move it over ``path``; on error the temporary file is
    removed and ``path`` is left untouched.  Returns ``path``.

    An OSError that names no file (a full disk, from ``write``'s writes or
    the sync) is given ``path``, for the one-line message."""
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, _TEMPORARY.format(base, uuid.uuid4().hex))
    # os.open honours the umask, unlike tempfile (always 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if binary:
            f = os.fdopen(fd, 'wb')
        else:
            f = os.fdopen(fd, 'w', encoding='utf-8', newline='')
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.strerror and e.filename is None:
            e.filename = path
        raise
    _sync_folder(folder)
    return path


def _sync_folder(folder):
    """Make a rename in ``folder`` durable (it lives in the folder's entry)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename stands
    finally:
        os.close(fd)


def refuse_a_file(folder):
    """RunError naming --out when ``folder``, where a run or a report goes,
    is an existing file (the user's, so it is left alone)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise RunError('--out {} is a file, not a folder; choose another '
                       '--out'.format(folder))


def write_npz(path, arrays, compressed=False):
    """Write ``arrays`` ({name: array}) to ``path`` as numpy.savez does,
    atomically.

    The archive is built in memory: NumPy leaves its ZipFile open when a
    write fails, and the ZipFile's destructor then fails again on the full
    disk with a traceback at exit.
    """
    buffer = io.BytesIO()
    (numpy.savez_compressed if compressed else numpy.savez)(buffer, **arrays)
    # The view is released even when the write fails: a failed write's
    # traceback holds it, and Python 3.12 then refuses to free the buffer.
    with buffer.getbuffer() as view:
        atomic_write(path, lambda f: f.write(view), binary=True)


def write_json(path, data):
    """Write ``data`` to ``path`` as indented JSON, atomically."""
    atomic_write(path, lambda f: json.dump(data, f, indent=2, sort_keys=True))


#: The record, in a folder the project writes into, of the files it wrote
#: there: the only ones it may overwrite or remove.
MANIFEST = '.chainer_vogn_files.json'


class Manifest(object):
    """The files the project wrote into ``folder`` (its :data:`MANIFEST`).

    A name is claimed before its file is first written, so that a kill in
    between leaves a claim without a file, never a file without a claim.
    Anything else in the folder is the user's and is left alone.
    """

    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, MANIFEST)
        try:
            with open(self.path) as f:
                names = json.load(f)['files']
        except (OSError, ValueError, KeyError, TypeError):
            names = []
        self.names = {n for n in names if isinstance(n, str)}

    def foreign(self, names):
        """Those of ``names`` that are in the folder but that the project
        did not write there."""
        return [n for n in names if n not in self.names and
                os.path.lexists(os.path.join(self.folder, n))]

    def refuse_foreign(self, names):
        """RunError, naming them, if any of ``names`` (files about to be
        written) is in the folder and not the project's."""
        foreign = self.foreign(names)
        if foreign:
            raise RunError(
                '--out {}: {} {} not written there by chainer_vogn (not in '
                'its {}) and would be overwritten; move {} away or choose '
                'another --out'.format(
                    self.folder, ', '.join(foreign),
                    'is' if len(foreign) == 1 else 'are', MANIFEST,
                    'it' if len(foreign) == 1 else 'them'))

    def claim(self, names):
        """Record ``names`` as the project's before they are written."""
        if not set(names) <= self.names:
            self.names |= set(names)
            write_json(self.path, {'files': sorted(self.names)})

    def remove(self, name):
        """Remove the file ``name`` if the project wrote it."""
        path = os.path.join(self.folder, name)
        if name in self.names and os.path.lexists(path):
            os.remove(path)
        if name in self.names:
            self.names.discard(name)
            write_json(self.path, {'files': sorted(self.names)})

