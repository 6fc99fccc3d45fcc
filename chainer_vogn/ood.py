"""Out-of-distribution inputs for a trained run, built from the data sets.

``--ood holdout:A-B`` takes the test images of classes A..B of the run's own
data set (held out of training with train.py ``--classes``), prepared exactly
as the run's; ``--ood NAME`` takes another data set's test images on the
[0, 1] scale, standardised with the run's training mean/std and enlarged to
the run's image size by pixel repetition.
"""
import numpy

import chainer

from chainer_vogn import datasets
from chainer_vogn import run_setup
from chainer_vogn.errors import RunError


def parse_ood(text):
    """None for 'none', else the OOD spec after checking its form."""
    if text == 'none':
        return None
    if text.startswith('holdout:'):
        datasets.parse_class_range(text[len('holdout:'):])
        return text
    if text not in datasets.DATASETS:
        raise ValueError(
            'unknown OOD set {!r}; choose none, one of {} or holdout:A-B '
            '(held-out classes of the run\'s own data set)'.format(
                text, ', '.join(datasets.DATASETS)))
    return text


def standardise_like(x, source, target):
    """Images standardised with ``source``'s mean/std, standardised with
    ``target``'s instead (both info dicts of :func:`datasets.get_dataset`).

    The [0, 1] images are recovered as x * std + mean in float64.
    """
    def channels(info, key):
        return numpy.asarray(info[key], numpy.float64)[:, None, None]
    raw = x.astype(numpy.float64) * channels(source, 'std') + \
        channels(source, 'mean')
    return ((raw - channels(target, 'mean')) /
            channels(target, 'std')).astype(numpy.float32)


def check_ood(spec, args, name='run'):
    """Check that the OOD set ``spec`` suits run ``name`` (options ``args``):
    a data set other than its own, or classes it was not trained on.
    Returns the classes of ``holdout:A-B``, else None."""
    if spec is None or not spec.startswith('holdout:'):
        if spec == args.dataset:
            raise RunError(
                '--ood {}: that is the data set run {} was trained on; use '
                '--ood holdout:A-B for its held-out classes'.format(spec,
                                                                   name))
        return None
    held = datasets.parse_class_range(spec[len('holdout:'):])
    if not args.classes:
        raise RunError(
            '--ood {}: run {} was trained on every class of {}, so no class '
            'is held out; train it with --classes (e.g. --classes 0-4 for '
            '--ood holdout:5-9) or choose another --ood'.format(
                spec, name, args.dataset))
    overlap = sorted(set(held) &
                     set(datasets.parse_class_range(args.classes)))
    if overlap:
        raise RunError(
            '--ood {}: classes {} of {} are in-distribution for run {} '
            '(trained with --classes {}); hold out only classes it was not '
            'trained on'.format(spec, overlap, args.dataset, name,
                                args.classes))
    return held


def load_ood(spec, args, info, name='run'):
    """Inputs (N, C, H, W) of the OOD set ``spec`` for run ``name``.

    ``args`` are the run's options (config.json as a Namespace) and ``info``
    its dataset_info.  ``holdout:A-B`` gives the test images of the held-out
    classes A..B of the run's data set, prepared exactly as the run's; a data
    set name gives that set's test images re-standardised with the run's
    mean/std (see :func:`standardise_like`).
    """
    held = check_ood(spec, args, name)
    if spec is None:
        return None
    if held is not None:
        _, test, full = datasets.get_dataset(
            args.dataset, data_dir=args.data_dir,
            allow_download=args.allow_download,
            image_size=run_setup.image_size_for(args), download_hint=None)
        if max(held) >= full['n_classes']:
            raise RunError('--ood {}: {} has only classes 0-{}'.format(
                spec, args.dataset, full['n_classes'] - 1))
        held_out = datasets.select_classes(test, held)
        return chainer.dataset.concat_examples(held_out)[0]
    _, test, ood_info = datasets.get_dataset(
        spec, data_dir=args.data_dir, allow_download=args.allow_download,
        download_hint=None)
    size, native = info['image_size'], ood_info['image_size']
    if ood_info['in_channels'] != info['in_channels'] or \
            not datasets.can_enlarge(native, size):
        raise RunError(
            '--ood {}: its images are {}x{}x{} but run {} takes {}x{}x{} '
            '(channels x height x width); choose an OOD set with the same '
            'number of channels whose images become {}x{} by an integer '
            'factor or an even border (or holdout:A-B)'.format(
                spec, ood_info['in_channels'], native, native, name,
                info['in_channels'], size, size, size, size))
    x = chainer.dataset.concat_examples(test)[0]
    return datasets.enlarge(standardise_like(x, ood_info, info), size,
                            info['mean'], info['std'])
