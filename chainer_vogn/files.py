"""Writing result files so that a crash never leaves half a file behind."""
import json
import os
import uuid


#: The temporary file atomic_write writes before it moves it over the
#: file named by its base name: '.<base>.<random hex>.tmp'.
_TEMPORARY = '.{}.{}.tmp'


def temporaries(base):
    """The glob pattern of the temporaries atomic_write leaves next to a
    file named ``base`` when it is killed (``base`` may hold a glob)."""
    return _TEMPORARY.format(base, '*')


def atomic_write(path, write, binary=False):
    """Call ``write(f)`` on a temporary file next to ``path``, sync it to
    the disk, then move it over ``path``; on error the temporary file is
    removed and ``path`` is left untouched.  Returns ``path``."""
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
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
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


def write_json(path, data):
    """Write ``data`` to ``path`` as indented JSON, atomically."""
    atomic_write(path, lambda f: json.dump(data, f, indent=2, sort_keys=True))
