"""Image classification data sets read from local files, as TupleDatasets.

Every data set comes back as ``(train, test, info)``: two
:class:`chainer.datasets.TupleDataset` of ``(x, t)`` pairs, ``x`` a float32
array of shape ``(C, H, W)`` and ``t`` an int32 label, and a dict describing
them.  Pixels are scaled to [0, 1] and then standardised per channel with the
mean and standard deviation of the TRAINING images (``info['mean']`` and
``info['std']``, on the [0, 1] scale), so that test and out-of-distribution
images go through exactly the same affine map.

Nothing is downloaded unless asked: CIFAR-10/100 and SVHN are read from the
official files in ``data_dir``; MNIST from its official idx files there or
from Chainer's own cache, and downloaded by Chainer only with
``allow_download=True``; Fashion-MNIST from its idx files (MNIST's names)
in ``data_dir`` or ``data_dir/fashion-mnist``; ``digits`` (8x8 digits
bundled with scikit-learn) always works offline.  CIFAR batches are pickles, so only read copies you
trust.
"""
import contextlib
import gzip
import os
import pickle
import struct
import tarfile
import zipfile
import zlib

import numpy
import scipy.io
import scipy.io.matlab

from chainer_vogn import compat  # NOQA: must run before chainer is imported
import chainer

#: Where :func:`get_dataset` looks for files when no ``data_dir`` is given.
DEFAULT_DATA_DIR = 'data'

#: name: (number of classes, channels, native image size)
_SHAPES = {
    'cifar10': (10, 3, 32),
    'cifar100': (100, 3, 32),
    'svhn': (10, 3, 32),
    'mnist': (10, 1, 28),
    'fashion-mnist': (10, 1, 28),
    'digits': (10, 1, 8),
}

#: Names accepted by :func:`get_dataset`.
DATASETS = tuple(_SHAPES)

_CIFAR = {
    'cifar10': {
        'folder': 'cifar-10-batches-py',
        'archive': 'cifar-10-python.tar.gz',
        'train': ['data_batch_{}'.format(i) for i in range(1, 6)],
        'test': ['test_batch'],
        'label_key': 'labels',
    },
    'cifar100': {
        'folder': 'cifar-100-python',
        'archive': 'cifar-100-python.tar.gz',
        'train': ['train'],
        'test': ['test'],
        'label_key': 'fine_labels',
    },
}
_CIFAR_URL = 'https://www.cs.toronto.edu/~kriz/cifar.html'
_SVHN_URL = 'http://ufldl.stanford.edu/housenumbers/'
_MNIST_URL = 'http://yann.lecun.com/exdb/mnist/'
_FASHION_URL = 'https://github.com/zalandoresearch/fashion-mnist'
_MNIST_FILES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
                't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']

# What reading a damaged file raises, from the formats used here (gzip and
# scipy.io report a short file as a bare OSError).
_CORRUPT_ERRORS = (EOFError, ValueError, KeyError, IndexError, OSError,
                   struct.error, zlib.error, tarfile.TarError,
                   zipfile.BadZipFile, pickle.UnpicklingError,
                   scipy.io.matlab.MatReadError)


class UnreadableFormat(ValueError):
    """A file that is whole but in a format this package does not read."""


@contextlib.contextmanager
def _reading(path):
    """Turns any sign of a damaged file into a ValueError naming it."""
    try:
        yield
    except (FileNotFoundError, PermissionError, IsADirectoryError,
            UnreadableFormat):
        raise
    except _CORRUPT_ERRORS as e:
        raise ValueError(
            '{} is corrupt or truncated ({}: {}); download it '
            'again'.format(path, type(e).__name__, e)) from e


def _not_found(name, paths, how):
    return FileNotFoundError(
        'no {} data found; looked for:\n  {}\n{}'.format(
            name, '\n  '.join(paths), how))


def _field(batch, key):
    """``batch[key]`` for pickles with str keys or Python 2 bytes keys."""
    if not isinstance(batch, dict):
        raise ValueError('expected a CIFAR batch (a dict of data and labels), '
                         'got a {}'.format(type(batch).__name__))
    if key in batch:
        return batch[key]
    return batch[key.encode('ascii')]


def _cifar_batch(batch, label_key):
    x = numpy.asarray(_field(batch, 'data'), dtype=numpy.uint8)
    t = numpy.asarray(_field(batch, label_key), dtype=numpy.int32)
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(t):
        raise ValueError(
            'expected N rows of 3072 pixels and N labels, got data of shape '
            '{} and {} labels'.format(x.shape, len(t)))
    return x.reshape(-1, 3, 32, 32), t


def _concat(batches):
    xs, ts = zip(*batches)
    return numpy.concatenate(xs), numpy.concatenate(ts)


def _load_cifar(name, data_dir):
    spec = _CIFAR[name]
    members = spec['train'] + spec['test']
    folder = os.path.join(data_dir, spec['folder'])
    archive = os.path.join(data_dir, spec['archive'])
    batches = {}
    if os.path.isdir(folder):
        for member in members:
            path = os.path.join(folder, member)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    '{} is missing: the extracted folder {} is incomplete; '
                    'extract {} again (from {})'.format(
                        path, folder, spec['archive'], _CIFAR_URL))
            with _reading(path), open(path, 'rb') as f:
                batches[member] = _cifar_batch(
                    pickle.load(f, encoding='bytes'), spec['label_key'])
    elif os.path.isfile(archive):
        with _reading(archive), tarfile.open(archive, 'r:gz') as tar:
            found = {os.path.basename(info.name): info
                     for info in tar.getmembers() if info.isfile()}
            for member in members:
                if member not in found:
                    raise ValueError('it has no member {}'.format(member))
                data = tar.extractfile(found[member]).read()
                batches[member] = _cifar_batch(
                    pickle.loads(data, encoding='bytes'), spec['label_key'])
    else:
        raise _not_found(name, [folder, archive], (
            'download {} from {} into {} (extracted or not), or pass '
            '--data-dir'.format(spec['archive'], _CIFAR_URL, data_dir)))
    train = _concat([batches[m] for m in spec['train']])
    test = _concat([batches[m] for m in spec['test']])
    return train + test


def _loadmat(path):
    """scipy.io.loadmat, which reads MATLAB files up to v7, not v7.3."""
    try:
        return scipy.io.loadmat(path)
    except NotImplementedError:
        raise UnreadableFormat(
            '{} is a MATLAB v7.3 (HDF5) file, which cannot be read here; '
            'use the file as published at {} (format 2), or save it again '
            'in MATLAB with -v7'.format(path, _SVHN_URL))


def _load_svhn(data_dir):
    paths = [os.path.join(data_dir, 'train_32x32.mat'),
             os.path.join(data_dir, 'test_32x32.mat')]
    if not all(os.path.isfile(path) for path in paths):
        raise _not_found('svhn', paths, (
            'download train_32x32.mat and test_32x32.mat (format 2) from {} '
            'into {}, or pass --data-dir'.format(_SVHN_URL, data_dir)))
    arrays = []
    for path in paths:
        with _reading(path):
            mat = _loadmat(path)
            x, t = mat['X'], mat['y'].ravel().astype(numpy.int32)
            if x.shape[:3] != (32, 32, 3) or x.ndim != 4 or \
                    x.shape[3] != len(t):
                raise ValueError(
                    'expected X of shape (32, 32, 3, N) and N labels, got '
                    '{} and {} labels'.format(x.shape, len(t)))
        # (H, W, C, N) -> (N, C, H, W); SVHN writes the digit 0 as label 10
        t[t == 10] = 0
        arrays += [x.transpose(3, 2, 0, 1), t]
    return arrays


def _read_idx(path):
    """The array stored in an idx file of unsigned bytes (MNIST's format)."""
    opener = gzip.open if path.endswith('.gz') else open
    with _reading(path):
        with opener(path, 'rb') as f:
            data = f.read()
        if len(data) < 4 or data[:3] != b'\x00\x00\x08':
            raise ValueError('not an idx file of unsigned bytes')
        ndim = data[3]
        shape = struct.unpack('>' + 'I' * ndim, data[4:4 + 4 * ndim])
        array = numpy.frombuffer(data, numpy.uint8, offset=4 + 4 * ndim)
        if array.size != numpy.prod(shape):
            raise ValueError('{} values for shape {}'.format(
                array.size, shape))
    return array.reshape(shape)


def _idx_candidates(folders):
    """For each of MNIST's four files, the paths it may have (.gz or not)."""
    return [[os.path.join(folder, stem + suffix) for folder in folders
             for suffix in ('.gz', '')] for stem in _MNIST_FILES]


def read_mnist_format(folder):
    """(x_train, t_train, x_test, t_test) of the MNIST-format files in
    ``folder`` (MNIST, Fashion-MNIST), or None if one of them is missing."""
    return _read_idx_set(_idx_candidates([folder]))


def write_mnist_format(folder, x_train, t_train, x_test, t_test):
    """Write four MNIST-format files (gzipped idx) into ``folder``: uint8
    images (N, 28, 28) and labels (N,)."""
    for stem, array in zip(_MNIST_FILES, (x_train, t_train, x_test, t_test)):
        array = numpy.ascontiguousarray(array, numpy.uint8)
        header = bytes([0, 0, 8, array.ndim]) + b''.join(
            int(d).to_bytes(4, 'big') for d in array.shape)
        with gzip.open(os.path.join(folder, stem + '.gz'), 'wb') as f:
            f.write(header + array.tobytes())


def _read_idx_set(idx_paths):
    """The four arrays of an MNIST-format set, or None if a file is missing."""
    found = [[p for p in candidates if os.path.isfile(p)]
             for candidates in idx_paths]
    if not all(found):
        return None
    x_train, t_train, x_test, t_test = [_read_idx(p[0]) for p in found]
    for x, t, path in ((x_train, t_train, found[0][0]),
                       (x_test, t_test, found[2][0])):
        if x.ndim != 3 or t.ndim != 1 or len(x) != len(t):
            raise ValueError(
                '{} holds images of shape {} for {} labels: not a '
                'matching MNIST-format pair'.format(path, x.shape, len(t)))
    return (x_train[:, None], t_train.astype(numpy.int32),
            x_test[:, None], t_test.astype(numpy.int32))


def _load_fashion_mnist(data_dir):
    idx_paths = _idx_candidates([data_dir,
                                 os.path.join(data_dir, 'fashion-mnist')])
    arrays = _read_idx_set(idx_paths)
    if arrays is None:
        raise _not_found('fashion-mnist', sum(idx_paths, []), (
            'download the four files (same names as MNIST\'s) from {} into '
            '{} or {}/fashion-mnist, or pass --data-dir'.format(
                _FASHION_URL, data_dir, data_dir)))
    return arrays


def _load_mnist(data_dir, allow_download, download_hint):
    idx_paths = _idx_candidates([data_dir])
    arrays = _read_idx_set(idx_paths)
    if arrays is not None:
        return arrays

    cache = chainer.dataset.get_dataset_directory(
        'pfnet/chainer/mnist', create_directory=False)
    npz_paths = [os.path.join(cache, 'train.npz'),
                 os.path.join(cache, 'test.npz')]
    if not all(os.path.isfile(p) for p in npz_paths):
        if not allow_download:
            how = 'download the four files from {} into {}, or pass ' \
                '--data-dir'.format(_MNIST_URL, data_dir)
            if download_hint:
                how += ", or let Chainer download them into its cache " \
                    "({})".format(download_hint)
            raise _not_found('mnist', sum(idx_paths, []) + npz_paths, how)
        # Chainer downloads into its cache, read below like any cached copy.
        chainer.datasets.get_mnist(ndim=3)
    arrays = []
    for path in npz_paths:
        with _reading(path), numpy.load(path) as npz:
            x, t = npz['x'], npz['y'].astype(numpy.int32)
            if x.shape[1:] != (784,) or len(x) != len(t):
                raise ValueError('{} images of shape {} for {} labels'.format(
                    len(x), x.shape[1:], len(t)))
        arrays += [x.reshape(-1, 1, 28, 28), t]
    return arrays


def _load_digits():
    """scikit-learn's 8x8 digits, split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images[:, None]
    t = digits.target.astype(numpy.int32)
    x_train, x_test, t_train, t_test = train_test_split(
        x, t, test_size=0.2, stratify=t, random_state=0)
    return x_train, t_train, x_test, t_test


def can_enlarge(native, size):
    """Whether images of side ``native`` can become ``size``: by an integer
    factor (pixel repetition) or an even border (padding)."""
    return size == native or (isinstance(size, int) and size > native and (
        size % native == 0 or (size - native) % 2 == 0))


def _check_size(name, native, image_size):
    if image_size is not None and not can_enlarge(native, image_size):
        raise ValueError(
            'image_size={} for {}: images are {}x{} and can only be enlarged '
            'by an integer factor (pixel repetition) or by an even border '
            '(padding), so image_size must be a multiple of {} or {} plus an '
            'even number'.format(image_size, name, native, native, native,
                                 native))


def _standardise(x_train, x_test, max_value):
    """Scales to [0, 1], then standardises with the training statistics."""
    x_train = x_train.astype(numpy.float32, order='C')
    x_test = x_test.astype(numpy.float32, order='C')
    x_train /= max_value
    x_test /= max_value
    channels = x_train.shape[1]
    mean = numpy.empty(channels)
    std = numpy.empty(channels)
    for c in range(channels):
        mean[c] = x_train[:, c].mean(dtype=numpy.float64)
        std[c] = x_train[:, c].std(dtype=numpy.float64)
    std[std == 0] = 1  # a constant channel is only shifted
    for x in (x_train, x_test):
        _standardise_in_place(x, mean, std)
    return x_train, x_test, mean, std


def _standardise_in_place(x, mean, std):
    """(x - mean) / std per channel of float32 images (N, C, H, W)."""
    x -= numpy.asarray(mean).astype(numpy.float32)[:, None, None]
    x /= numpy.asarray(std).astype(numpy.float32)[:, None, None]


def enlarge(x, image_size, mean, std):
    """Standardised images ``x`` (N, C, h, w) brought to image_size^2.

    An integer multiple of the native size repeats pixels (8x8 digits to
    32x32); any other larger size pads an even border of black, a raw 0
    standardised with the per-channel ``mean`` and ``std`` (MNIST's 28x28 to
    LeNet-5's 32x32, as LeNet-5 was fed originally).
    """
    native = x.shape[-1]
    if image_size is None or image_size == native:
        return x
    if image_size % native == 0:
        factor = image_size // native
        return x.repeat(factor, axis=2).repeat(factor, axis=3)
    black = -numpy.asarray(mean) / numpy.asarray(std)
    border = (image_size - native) // 2
    out = numpy.empty(x.shape[:2] + (image_size, image_size), x.dtype)
    out[...] = black.astype(x.dtype)[:, None, None]
    out[:, :, border:border + native, border:border + native] = x
    return out


def image_shape(name):
    """(channels, side) of the images of data set ``name`` as stored."""
    if name not in _SHAPES:
        raise ValueError('unknown data set {!r}; choose one of {}'.format(
            name, ', '.join(DATASETS)))
    return _SHAPES[name][1:]


def prepare_images(x, info):
    """Images on the [0, 1] scale, prepared as :func:`get_dataset` prepares
    its own: standardised with ``info``'s mean and std, enlarged to
    ``info['image_size']``.

    ``x`` is (N, C, H, W) at the data set's own size (``image_shape``);
    ``info`` is a dict returned by :func:`get_dataset` (or a run's
    config.json ``dataset_info``).  Returns float32 (N, C, S, S).
    """
    x = numpy.array(x, dtype=numpy.float32, order='C')
    channels, side = image_shape(info['name'])
    if x.ndim != 4 or x.shape[1:] != (channels, side, side):
        raise ValueError(
            '{} images must have shape (N, {}, {}, {}), got {}'.format(
                info['name'], channels, side, side, x.shape))
    _standardise_in_place(x, info['mean'], info['std'])
    return enlarge(x, info['image_size'], info['mean'], info['std'])


def get_dataset(name, data_dir=None, allow_download=False, image_size=None,
                download_hint='allow_download=True'):
    """Loads a data set as ``(train, test, info)``.

    Args:
        name (str): One of :data:`DATASETS`.
        data_dir (str): Folder with the official files (see the module
            docstring); :data:`DEFAULT_DATA_DIR` if None.
        allow_download (bool): Let Chainer download MNIST into its cache when
            no local copy exists.  The other data sets are never downloaded.
        image_size (int): Side of the returned images.  Only integer
            multiples of the native size are allowed; images are enlarged by
            pixel repetition (e.g. 8x8 digits to 32x32 for the CIFAR-sized
            convolutional networks).
        download_hint (str): How the caller allows the download, for the
            message when MNIST is missing (train.py: its --allow-download);
            None: the caller cannot, and the message leaves it out.

    Returns:
        tuple: ``train`` and ``test`` TupleDatasets of ``(x, t)`` and the
        dict ``info`` with keys ``name``, ``n_classes``, ``in_channels``,
        ``image_size``, ``n_train``, ``n_test``, ``mean`` and ``std`` (per
        channel, on the [0, 1] pixel scale).

    """
    channels, native = image_shape(name)
    n_classes = _SHAPES[name][0]
    _check_size(name, native, image_size)
    if data_dir is None:
        data_dir = DEFAULT_DATA_DIR

    max_value = 255
    if name in _CIFAR:
        arrays = _load_cifar(name, data_dir)
    elif name == 'svhn':
        arrays = _load_svhn(data_dir)
    elif name == 'mnist':
        arrays = _load_mnist(data_dir, allow_download, download_hint)
    elif name == 'fashion-mnist':
        arrays = _load_fashion_mnist(data_dir)
    else:
        arrays = _load_digits()
        max_value = 16
    x_train, t_train, x_test, t_test = arrays
    for t, split in ((t_train, 'training'), (t_test, 'test')):
        if len(t) and (t.min() < 0 or t.max() >= n_classes):
            raise ValueError(
                '{} {} labels range over {}..{}, expected 0..{}; the files in '
                '{} are damaged'.format(name, split, t.min(), t.max(),
                                        n_classes - 1, data_dir))

    x_train, x_test, mean, std = _standardise(x_train, x_test, max_value)
    x_train = enlarge(x_train, image_size, mean, std)
    x_test = enlarge(x_test, image_size, mean, std)
    info = {
        'name': name,
        'n_classes': n_classes,
        'in_channels': channels,
        'image_size': image_size or native,
        'n_train': len(t_train),
        'n_test': len(t_test),
        'mean': [float(m) for m in mean],
        'std': [float(s) for s in std],
    }
    return (chainer.datasets.TupleDataset(x_train, t_train),
            chainer.datasets.TupleDataset(x_test, t_test), info)


def parse_class_range(text):
    """Parses class lists such as ``'5-9'``, ``'0,2,4'`` or ``'0-2,7'``.

    Returns the classes in the order written; negative, reversed, repeated
    or non-integer entries raise ValueError.
    """
    classes = []
    for part in str(text).split(','):
        try:
            if '-' in part:
                first, last = (int(bound) for bound in part.split('-'))
            else:
                first = last = int(part)
        except ValueError:
            first = last = None
        if first is None or first < 0 or first > last:
            raise ValueError(
                'bad class list {!r} at {!r}: expected non-negative integers '
                'and increasing ranges separated by commas, such as 5-9 or '
                '0,2,4'.format(text, part))
        classes += range(first, last + 1)
    if len(set(classes)) != len(classes):
        raise ValueError('class list {!r} names a class twice'.format(text))
    return classes


def select_classes(dataset, classes, relabel=False):
    """The examples of ``dataset`` whose label is in ``classes``.

    Used to hold classes out of training and to build out-of-distribution
    sets from them.  With ``relabel=True`` the label ``classes[k]`` becomes
    ``k``; otherwise labels are kept.  Returns a TupleDataset of copies.
    """
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(
            'classes must be a non-empty list without repeats, got {}'.format(
                classes))
    labels = numpy.array([int(dataset[i][1]) for i in range(len(dataset))],
                         dtype=numpy.int32)
    index = numpy.flatnonzero(numpy.isin(labels, classes))
    if len(index) == 0:
        raise ValueError('no example has a label in {}'.format(classes))
    x = numpy.stack([dataset[i][0] for i in index])
    t = labels[index]
    if relabel:
        position = {c: k for k, c in enumerate(classes)}
        t = numpy.array([position[c] for c in t], dtype=numpy.int32)
    return chainer.datasets.TupleDataset(x, t)


def labels_of(dataset):
    """The labels of a TupleDataset of (x, t) as an int32 array."""
    return numpy.asarray(dataset._datasets[1], dtype=numpy.int32)


def stratified_indices(labels, size, rng):
    """``size`` indices into ``labels``, drawn so that each class keeps its
    share of the set (largest remainder), in increasing order.

    ``rng`` (a numpy RandomState) picks which examples of a class are taken,
    so a seed fixes the subset.
    """
    labels = numpy.asarray(labels)
    classes, counts = numpy.unique(labels, return_counts=True)
    exact = counts * (size / float(len(labels)))
    quota = numpy.floor(exact).astype(int)
    shortfall = size - quota.sum()
    quota[numpy.argsort(quota - exact, kind='stable')[:shortfall]] += 1
    chosen = [rng.permutation(numpy.flatnonzero(labels == c))[:k]
              for c, k in zip(classes, quota)]
    return numpy.sort(numpy.concatenate(chosen))


def subset(dataset, index):
    """The examples ``index`` of a TupleDataset of (x, t), as copies."""
    x, t = dataset._datasets
    return chainer.datasets.TupleDataset(x[index], t[index])


def flip_labels(labels, fraction, n_classes, rng):
    """``labels`` with round(fraction x N) of them, chosen at random, each
    replaced by one of the other classes uniformly; also the flipped
    indices.  The study sets of docs/tuning.md ("40 % wrong labels")."""
    labels = numpy.array(labels, dtype=numpy.int32)
    flipped = numpy.sort(rng.permutation(len(labels))[
        :int(round(fraction * len(labels)))])
    shift = rng.randint(1, n_classes, size=len(flipped))
    labels[flipped] = (labels[flipped] + shift) % n_classes
    return labels, flipped


class RandomCropFlip(object):
    """Zero-pads, crops a random window of the original size, flips half.

    The standard CIFAR augmentation, applied to ``(x, t)`` examples (images
    of shape ``(C, H, W)``; zero is the mean pixel after standardisation).
    The random state is this object's own and lives in one process: worker
    processes of a MultiprocessIterator and ChainerMN ranks each start from a
    copy of it, so give every rank its own ``seed`` (e.g. ``seed + rank``).
    """

    def __init__(self, pad=4, seed=0):
        self.pad = pad
        self.random_state = numpy.random.RandomState(seed)

    def __call__(self, example):
        x, t = example
        _, h, w = x.shape
        p = self.pad
        padded = numpy.pad(x, ((0, 0), (p, p), (p, p)), mode='constant')
        top, left = self.random_state.randint(0, 2 * p + 1, size=2)
        x = padded[:, top:top + h, left:left + w]
        if self.random_state.randint(2):
            x = x[:, :, ::-1]
        return numpy.ascontiguousarray(x), t

