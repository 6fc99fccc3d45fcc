"""What a run's options make: its data, its model and its device.

Training (:mod:`chainer_vogn.training`) and evaluation
(:mod:`chainer_vogn.evaluation`) build them with the same functions, so
evaluate.py sees a run's test set and model exactly as training did.
"""
import numpy

import chainer
import chainer.links as L

from chainer_vogn import datasets
from chainer_vogn import models
from chainer_vogn.errors import RunError

#: Conv nets are built for CIFAR-sized inputs; smaller images are upsampled.
CONV_IMAGE_SIZE = 32

#: Streams of the random state (seed, stream) that pick a run's data: the
#: subset of --train-size, the flips of --label-noise, the held-out images
#: of --val-split.  Fixed per seed and apart from the training's own.
_SUBSET_STREAM, _LABEL_NOISE_STREAM, _VAL_STREAM = 11, 12, 13

def image_size_for(args):
    """The image size the run's model takes, when it is not the data set's
    own (conv nets take at least CIFAR's 32 x 32); else None."""
    native = datasets.image_shape(args.dataset)[1]
    if args.arch != 'mlp' and native < CONV_IMAGE_SIZE:
        return CONV_IMAGE_SIZE
    return None


def load_data(args, download_hint=None):
    """(train, test, info) as the run with options ``args`` sees them.

    evaluate.py calls this with a run's recorded options, so its test set
    goes through exactly the same classes, size and standardisation; it has
    no option to allow the download, so it gives no ``download_hint`` (see
    :func:`~chainer_vogn.datasets.get_dataset`).
    """
    train, test, info = datasets.get_dataset(
        args.dataset, data_dir=args.data_dir,
        allow_download=args.allow_download, image_size=image_size_for(args),
        download_hint=download_hint)
    if args.classes:
        classes = datasets.parse_class_range(args.classes)
        if max(classes) >= info['n_classes']:
            raise ValueError('--classes {}: {} has only classes 0-{}'.format(
                args.classes, args.dataset, info['n_classes'] - 1))
        train = datasets.select_classes(train, classes, relabel=True)
        test = datasets.select_classes(test, classes, relabel=True)
        info = dict(info, n_classes=len(classes), classes=classes,
                    n_train=len(train), n_test=len(test))
    if args.train_size is not None:
        if args.train_size > len(train):
            raise ValueError('--train-size {}: the training set of {} has '
                             'only {} images'.format(
                                 args.train_size, _describe_set(args),
                                 len(train)))
        train = datasets.subset(train, datasets.stratified_indices(
            datasets.labels_of(train), args.train_size,
            numpy.random.RandomState([args.seed, _SUBSET_STREAM])))
        info = dict(info, n_train=len(train))
    if args.label_noise:
        labels, flipped = datasets.flip_labels(
            datasets.labels_of(train), args.label_noise, info['n_classes'],
            numpy.random.RandomState([args.seed, _LABEL_NOISE_STREAM]))
        train = chainer.datasets.TupleDataset(train._datasets[0], labels)
        info = dict(info, n_flipped=len(flipped))
    return train, test, info


def split_validation(train, args):
    """(train, validation): ``args.val_split`` of the training images held
    out, stratified by class and fixed by the seed; validation is None
    without --val-split.  The held-out labels carry the same noise as the
    rest (--label-noise): they are data the user has, not the test set."""
    if not args.val_split:
        return train, None
    labels = datasets.labels_of(train)
    size = int(round(args.val_split * len(labels)))
    if not 0 < size < len(labels):
        raise ValueError('--val-split {}: {} training images leave {} for '
                         'validation; choose a fraction that holds out at '
                         'least one and keeps at least one'.format(
                             args.val_split, len(labels), size))
    held = datasets.stratified_indices(
        labels, size, numpy.random.RandomState([args.seed, _VAL_STREAM]))
    kept = numpy.setdiff1d(numpy.arange(len(labels)), held)
    return datasets.subset(train, kept), datasets.subset(train, held)


def _describe_set(args):
    """The data set and classes a run draws from: 'mnist classes 0-4'."""
    return args.dataset + (' classes {}'.format(args.classes)
                           if args.classes else '')


def describe_data(args):
    """The data a run trains on, in words: 'mnist classes 0-4, 5000
    training images, 40 % label noise'."""
    parts = [_describe_set(args)]
    if args.train_size is not None:
        parts.append('{} training images'.format(args.train_size))
    if args.label_noise:
        parts.append('{:g} % label noise'.format(100 * args.label_noise))
    return ', '.join(parts)


def build_model(args, info):
    """The run's ``L.Classifier`` for data described by ``info``."""
    predictor = models.get_model(args.arch, info['n_classes'],
                                 in_channels=info['in_channels'],
                                 dropout=args.dropout)
    return L.Classifier(predictor)


def select_device(device, mpi_comm=None):
    """The CPU (``device`` < 0), or GPU ``device`` + the rank's index on its
    node among the processes of ``mpi_comm`` (an mpi4py communicator).
    ``device`` may also be a Chainer specifier ('@numpy', '@cupy:0').
    RunError, naming it, when the device cannot be used."""
    if isinstance(device, str):
        spec = used = device
    elif device < 0:
        return chainer.get_device('@numpy')
    else:
        local = 0
        if mpi_comm is not None:
            from mpi4py import MPI
            local = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED).rank
        used = device + local
        spec = '@cupy:{}'.format(used)
    try:
        gpu = chainer.get_device(spec)
        gpu.use()
    except (RuntimeError, ValueError) as e:
        raise RunError('--device {}: no usable GPU {} ({}); install CuPy '
                       'or pass --device -1 for the CPU'.format(
                           device, used, ' '.join(str(e).split())))
    return gpu
