"""Data (the study sets of --train-size, --label-noise and --val-split),
model and device from a run's options."""
import argparse
import collections

import numpy
import pytest

from chainer_vogn import run_options
from chainer_vogn import run_setup


def test_conv_nets_get_cifar_sized_digits():
    args = argparse.Namespace(dataset='digits', arch='lenet5')
    assert run_setup.image_size_for(args) == 32
    args.arch = 'mlp'
    assert run_setup.image_size_for(args) is None


def test_cpu_device():
    assert run_setup.select_device(-1).xp is numpy


# Study sets: --train-size, --label-noise, --val-split

def _data_args(*argv):
    return run_options.parse_args(['--dataset', 'digits', '--arch', 'mlp'] +
                                 list(argv))


def _examples(dataset):
    """The (image bytes, label) pairs of ``dataset``, as a multiset."""
    x, t = dataset._datasets
    return collections.Counter(zip((row.tobytes() for row in x),
                                   numpy.asarray(t).tolist()))


def _labels(dataset):
    return numpy.asarray(dataset._datasets[1])


@pytest.fixture(scope='module')
def digits():
    """load_data of the whole digits set: (train, test, info)."""
    return run_setup.load_data(_data_args())


def test_train_size_is_a_stratified_subset_fixed_by_the_seed(digits):
    full, full_test, full_info = digits
    train, test, info = run_setup.load_data(_data_args('--train-size',
                                                        '300'))
    assert len(train) == info['n_train'] == 300
    assert 'n_flipped' not in info
    assert not _examples(train) - _examples(full)  # drawn from the set
    share = 300 * numpy.bincount(_labels(full)) / len(full)
    assert numpy.all(numpy.abs(numpy.bincount(_labels(train), minlength=10)
                               - share) < 1)
    assert _examples(test) == _examples(full_test)  # the test set stays
    assert info['n_test'] == full_info['n_test']
    again, _, _ = run_setup.load_data(_data_args('--train-size', '300'))
    assert _examples(again) == _examples(train)
    other, _, _ = run_setup.load_data(_data_args('--train-size', '300',
                                                  '--seed', '1'))
    assert _examples(other) != _examples(train)


def test_train_size_draws_from_the_selected_classes():
    selected, _, _ = run_setup.load_data(_data_args('--classes', '0-4'))
    train, _, info = run_setup.load_data(_data_args('--classes', '0-4',
                                                     '--train-size', '100'))
    assert len(train) == info['n_train'] == 100
    assert not _examples(train) - _examples(selected)
    share = 100 * numpy.bincount(_labels(selected)) / len(selected)
    assert numpy.all(numpy.abs(numpy.bincount(_labels(train), minlength=5)
                               - share) < 1)
    whole, _, _ = run_setup.load_data(_data_args(
        '--classes', '0-4', '--train-size', str(len(selected))))
    assert _examples(whole) == _examples(selected)


def test_train_size_beyond_the_selected_set_is_refused(digits):
    n = len(run_setup.load_data(_data_args('--classes', '0-4'))[0])
    assert n < len(digits[0])
    with pytest.raises(ValueError) as error:
        run_setup.load_data(_data_args('--classes', '0-4', '--train-size',
                                        str(n + 1), '--label-noise', '0.3'))
    assert str(error.value) == (
        '--train-size {}: the training set of digits classes 0-4 has only '
        '{} images'.format(n + 1, n))


def test_label_noise_flips_training_labels_only():
    clean, clean_test, _ = run_setup.load_data(_data_args('--train-size',
                                                           '300'))
    noisy, noisy_test, info = run_setup.load_data(_data_args(
        '--train-size', '300', '--label-noise', '0.3'))
    assert info['n_flipped'] == 90 and info['n_train'] == 300
    # The same images (the subset does not depend on the noise) ...
    numpy.testing.assert_array_equal(noisy._datasets[0], clean._datasets[0])
    # ... with 90 labels changed, each to another valid class.
    changed = _labels(noisy) != _labels(clean)
    assert changed.sum() == 90
    assert _labels(noisy).min() >= 0 and _labels(noisy).max() <= 9
    assert _labels(noisy).dtype == numpy.int32
    assert _examples(noisy_test) == _examples(clean_test)

    again, _, _ = run_setup.load_data(_data_args(
        '--train-size', '300', '--label-noise', '0.3'))
    numpy.testing.assert_array_equal(_labels(again), _labels(noisy))
    other, _, _ = run_setup.load_data(_data_args(
        '--train-size', '300', '--label-noise', '0.3', '--seed', '1'))
    other_clean, _, _ = run_setup.load_data(_data_args(
        '--train-size', '300', '--seed', '1'))
    other_changed = _labels(other) != _labels(other_clean)
    assert other_changed.sum() == 90
    assert not numpy.array_equal(other_changed, changed)


def test_label_noise_of_selected_classes_stays_among_them():
    train, _, info = run_setup.load_data(_data_args(
        '--classes', '5-9', '--label-noise', '0.5'))
    clean, _, _ = run_setup.load_data(_data_args('--classes', '5-9'))
    assert info['n_flipped'] == round(0.5 * len(clean))
    assert (_labels(train) != _labels(clean)).sum() == info['n_flipped']
    assert set(numpy.unique(_labels(train))) == set(range(5))


def test_val_split_holds_out_a_stratified_part(digits):
    full = digits[0]
    args = _data_args('--val-split', '0.2')
    train, held = run_setup.split_validation(full, args)
    size = int(round(0.2 * len(full)))
    assert (len(held), len(train)) == (size, len(full) - size)
    # Disjoint and covering: together they are the input, example for
    # example.
    assert _examples(train) + _examples(held) == _examples(full)
    share = size * numpy.bincount(_labels(full)) / len(full)
    assert numpy.all(numpy.abs(numpy.bincount(_labels(held), minlength=10)
                               - share) < 1)
    again_train, again_held = run_setup.split_validation(full, args)
    assert _examples(again_held) == _examples(held)
    assert _examples(again_train) == _examples(train)
    _, other = run_setup.split_validation(full, _data_args(
        '--val-split', '0.2', '--seed', '1'))
    assert _examples(other) != _examples(held)


def test_val_split_of_a_noisy_subset():
    args = _data_args('--train-size', '300', '--label-noise', '0.3',
                      '--val-split', '0.2')
    noisy, _, _ = run_setup.load_data(args)
    train, held = run_setup.split_validation(noisy, args)
    assert (len(train), len(held)) == (240, 60)
    assert _examples(train) + _examples(held) == _examples(noisy)


def test_no_val_split_keeps_the_training_set(digits):
    train, held = run_setup.split_validation(digits[0], _data_args())
    assert train is digits[0] and held is None


@pytest.mark.parametrize('n, fraction', [(300, 0.001), (300, 0.999),
                                         (3, 0.1)])
def test_val_split_that_holds_out_nothing_or_everything_is_refused(
        digits, n, fraction):
    train = run_setup.load_data(_data_args('--train-size', str(n)))[0]
    with pytest.raises(ValueError, match=r'--val-split {}: {} training '
                       'images leave {} for validation'.format(
                           fraction, n, int(round(fraction * n)))):
        run_setup.split_validation(train, _data_args(
            '--val-split', str(fraction)))


@pytest.mark.parametrize('argv, expected', [
    ([], 'digits'),
    (['--classes', '0-4'], 'digits classes 0-4'),
    (['--train-size', '500'], 'digits, 500 training images'),
    (['--label-noise', '0.3'], 'digits, 30 % label noise'),
    (['--classes', '0-4', '--train-size', '500', '--label-noise', '0.125',
      '--val-split', '0.1'],
     'digits classes 0-4, 500 training images, 12.5 % label noise'),
])
def test_describe_data(argv, expected):
    assert run_setup.describe_data(_data_args(*argv)) == expected
