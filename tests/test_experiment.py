"""The experiment module: the optimizer registry, data, model and device."""
import argparse
import collections
import dataclasses
import json

import numpy
import pytest

import chainer
import chainermn

from chainer_vogn import experiment


def _args(optimizer, **overrides):
    args = experiment.parse_args(['--optimizer', optimizer])
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


@pytest.fixture(scope='module')
def comm():
    return chainermn.create_communicator('naive')


@pytest.mark.parametrize('name', list(experiment.OPTIMIZERS))
def test_every_registered_optimizer_trains_a_step(comm, name):
    """The builder returns an optimizer set up on the model that moves its
    weights, whose lr_attr --lr-milestones can decay, with --lr as that
    hyperparameter's value."""
    spec = experiment.optimizer_spec(name)
    args = _args(name, lr=0.05)
    train, _, info = experiment.load_data(args)
    numpy.random.seed(0)
    model = experiment.build_model(args, info)
    x, t = chainer.dataset.concat_examples(train[:16])
    model.predictor(x)  # lazy shapes
    optimizer = spec.build(args, comm, model, len(train))
    assert optimizer.target is model
    assert getattr(optimizer.hyperparam, spec.lr_attr) == 0.05
    before = {n: p.array.copy() for n, p in model.namedparams()}
    optimizer.update(model, x, t)
    assert any(not numpy.array_equal(before[n], p.array)
               for n, p in model.namedparams())
    # A posterior to sample from exists exactly for 'weights'.
    assert hasattr(optimizer, 'dataset_size') == (spec.sampling == 'weights')
    assert spec.sampling in experiment.SAMPLINGS


def test_mcdropout_is_adam_sampled_with_dropout(comm):
    spec = experiment.optimizer_spec('mcdropout')
    args = _args('mcdropout')
    assert (spec.sampling, args.dropout, spec.label) == ('dropout', 0.5,
                                                         'MC dropout')
    model = experiment.build_model(args, {'n_classes': 3, 'in_channels': 1})
    model.predictor(numpy.zeros((1, 1, 8, 8), numpy.float32))
    assert type(spec.build(args, comm, model, 10)) is chainer.optimizers.Adam


@pytest.mark.parametrize('name', ['adam', 'mcdropout', 'sgd'])
def test_weight_decay_applies_to_the_baselines(comm, name):
    """With a zero gradient, only weight decay moves the weights: by lr *
    decay * w for SGD's first step (momentum starts at zero)."""
    weights = {}
    for decay in (0.0, 0.5):
        args = _args(name, weight_decay=decay, lr=0.1, dropout=0.0)
        model = chainer.links.Linear(3, 2)
        model.W.array[...] = 1.0
        optimizer = experiment.OPTIMIZERS[name].build(args, comm, model, 10)
        model.cleargrads()
        for param in model.params():
            param.grad = numpy.zeros_like(param.array)
        optimizer.update()
        weights[decay] = model.W.array.copy()
    numpy.testing.assert_array_equal(weights[0.0], 1.0)
    if name == 'sgd':
        numpy.testing.assert_allclose(weights[0.5], 1.0 - 0.1 * 0.5,
                                      rtol=1e-6)
    else:
        assert (weights[0.5] < 1.0).all()


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="'rmsprop'.*vogn, adam"):
        experiment.optimizer_spec('rmsprop')


def test_defaults_come_from_the_optimizers():
    """--lr and VOGN's options default to the optimizers' own defaults
    (VOGN's lr to None: DistributedVOGN scales it with the data shards)."""
    from chainer_vogn import optimizer as vogn_module
    hp = vogn_module._default_hyperparam
    args = experiment.parse_args([])
    assert args.lr is None
    for name in ('beta1', 'beta2', 'prior_precision', 'tau', 'damping',
                 'init_precision', 'aug_factor', 'bias_correction',
                 'tau_warmup_steps', 'tau_init'):
        assert getattr(args, name) == getattr(hp, name), name
    assert experiment.parse_args(['--optimizer', 'adam']).lr == \
        chainer.optimizers.Adam().alpha
    assert experiment.parse_args(['--optimizer', 'sgd']).lr == \
        chainer.optimizers.MomentumSGD().lr


def test_conv_nets_get_cifar_sized_digits():
    args = argparse.Namespace(dataset='digits', arch='lenet5')
    assert experiment.image_size_for(args) == 32
    args.arch = 'mlp'
    assert experiment.image_size_for(args) is None


def test_cpu_device():
    assert experiment.select_device(-1).xp is numpy


# One validation path for the options, whatever their source

@pytest.mark.parametrize('option, value, message', [
    ('epochs', 0, 'epochs: 0 is invalid; it must be an integer >= 1'),
    ('snapshot_interval', 0, 'snapshot_interval: 0 is invalid'),
    ('batchsize', -4, 'batchsize: -4 is invalid'),
    ('mc', 0, 'mc: 0 is invalid'),
    ('lr', -1, 'lr: -1.0 is invalid; it must be a number > 0'),
    ('weight_decay', -0.1, 'weight_decay: -0.1 is invalid'),
    ('dropout', 1.0, 'dropout: 1.0 is invalid'),
    ('seed', -1, 'seed: -1 is invalid'),
    ('lr_milestones', '5,3', 'lr_milestones: [5, 3] is invalid'),
    ('classes', '3', "classes: '3' is one class"),
    ('classes', '4-2', "bad class list '4-2'"),
    ('optimizer', 'rmsprop', "optimizer: 'rmsprop' is not one of"),
    ('damping', -1, 'VOGN: damping = -1.0 is invalid'),
    ('tau', 0, 'VOGN: tau = 0.0 is invalid'),
    ('train_size', 0, 'train_size: 0 is invalid; it must be an integer >= 1'),
    ('label_noise', 1, 'label_noise: 1.0 is invalid; it must be a fraction '
                       'in [0, 1)'),
    ('label_noise', -0.1, 'label_noise: -0.1 is invalid'),
    ('label_noise', float('nan'), 'label_noise: nan is invalid'),
    ('val_split', 1, 'val_split: 1.0 is invalid; it must be a fraction in '
                     '[0, 1)'),
    ('val_split', -0.2, 'val_split: -0.2 is invalid'),
])
def test_same_check_from_python_command_line_and_file(
        tmp_path, capsys, option, value, message):
    with pytest.raises(experiment.ConfigError) as error:
        experiment.RunConfig(**{option: value})
    assert message in str(error.value) and error.value.option == option

    flag = '--' + option.replace('_', '-')
    with pytest.raises(SystemExit) as exit:
        experiment.parse_args([flag, str(value)])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err

    config = tmp_path / 'c.json'
    config.write_text(json.dumps({option: value}))
    with pytest.raises(SystemExit):
        experiment.parse_args(['--config', str(config)])
    err = capsys.readouterr().err
    assert err.startswith('train.py: error: --config {}: '.format(config))
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize('value', [1.5, True, '10x', [3]])
def test_epochs_must_be_an_integer(value):
    with pytest.raises(experiment.ConfigError, match='epochs: .* is invalid'):
        experiment.RunConfig(epochs=value)


def test_values_are_converted_as_on_the_command_line():
    """Strings (YAML reads 1e-3 as one) and ints become the option's type."""
    config = experiment.RunConfig(lr='1e-3', epochs='7', out=2024,
                                  prior_precision=10, lr_milestones='2,4')
    assert (config.lr, config.epochs, config.out, config.prior_precision,
            config.lr_milestones) == (1e-3, 7, '2024', 10.0, [2, 4])
    assert isinstance(config.prior_precision, float)


def test_command_line_value_wins_even_when_it_equals_the_default(tmp_path):
    config = tmp_path / 'c.yaml'
    config.write_text('epochs: 3\nseed: 5\n')
    args = experiment.parse_args(['--config', str(config), '--epochs', '10'])
    assert (args.epochs, args.seed, args.config) == (10, 5, str(config))


def test_combinations():
    with pytest.raises(experiment.ConfigError, match='samples: 2 applies to '
                                                     'vogn only'):
        experiment.RunConfig(optimizer='sgd', samples=2)
    with pytest.raises(experiment.ConfigError, match='needs dropout > 0'):
        experiment.RunConfig(optimizer='mcdropout', dropout=0)
    with pytest.raises(experiment.ConfigError, match='pure_nccl needs GPUs'):
        experiment.RunConfig(communicator='pure_nccl')
    with pytest.raises(experiment.ConfigError, match='tau_init'):
        experiment.RunConfig(tau_warmup_steps=10, tau_init=0)
    assert experiment.RunConfig(optimizer='mcdropout').dropout == 0.5
    assert experiment.RunConfig(optimizer='sgd').lr == 0.01


def test_from_record_reads_a_runs_config_json():
    record = dict(dataclasses.asdict(experiment.RunConfig(
        optimizer='adam', classes='0-4')), processes=4, versions={},
        finished=True)
    config = experiment.RunConfig.from_record(record)
    assert (config.optimizer, config.classes, config.lr) == ('adam', '0-4',
                                                             1e-3)
    # Records of earlier versions lack newer options: defaults fill them.
    assert experiment.RunConfig.from_record({'optimizer': 'sgd'}).momentum \
        == 0.9
    with pytest.raises(experiment.ConfigError, match='mapping'):
        experiment.RunConfig.from_record([1, 2])


# Study sets: --train-size, --label-noise, --val-split

def _data_args(*argv):
    return experiment.parse_args(['--dataset', 'digits', '--arch', 'mlp'] +
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
    return experiment.load_data(_data_args())


def test_train_size_is_a_stratified_subset_fixed_by_the_seed(digits):
    full, full_test, full_info = digits
    train, test, info = experiment.load_data(_data_args('--train-size',
                                                        '300'))
    assert len(train) == info['n_train'] == 300
    assert 'n_flipped' not in info
    assert not _examples(train) - _examples(full)  # drawn from the set
    share = 300 * numpy.bincount(_labels(full)) / len(full)
    assert numpy.all(numpy.abs(numpy.bincount(_labels(train), minlength=10)
                               - share) < 1)
    assert _examples(test) == _examples(full_test)  # the test set stays
    assert info['n_test'] == full_info['n_test']
    again, _, _ = experiment.load_data(_data_args('--train-size', '300'))
    assert _examples(again) == _examples(train)
    other, _, _ = experiment.load_data(_data_args('--train-size', '300',
                                                  '--seed', '1'))
    assert _examples(other) != _examples(train)


def test_train_size_draws_from_the_selected_classes():
    selected, _, _ = experiment.load_data(_data_args('--classes', '0-4'))
    train, _, info = experiment.load_data(_data_args('--classes', '0-4',
                                                     '--train-size', '100'))
    assert len(train) == info['n_train'] == 100
    assert not _examples(train) - _examples(selected)
    share = 100 * numpy.bincount(_labels(selected)) / len(selected)
    assert numpy.all(numpy.abs(numpy.bincount(_labels(train), minlength=5)
                               - share) < 1)
    whole, _, _ = experiment.load_data(_data_args(
        '--classes', '0-4', '--train-size', str(len(selected))))
    assert _examples(whole) == _examples(selected)


def test_train_size_beyond_the_selected_set_is_refused(digits):
    n = len(experiment.load_data(_data_args('--classes', '0-4'))[0])
    assert n < len(digits[0])
    with pytest.raises(ValueError) as error:
        experiment.load_data(_data_args('--classes', '0-4', '--train-size',
                                        str(n + 1), '--label-noise', '0.3'))
    assert str(error.value) == (
        '--train-size {}: the training set of digits classes 0-4 has only '
        '{} images'.format(n + 1, n))


def test_label_noise_flips_training_labels_only():
    clean, clean_test, _ = experiment.load_data(_data_args('--train-size',
                                                           '300'))
    noisy, noisy_test, info = experiment.load_data(_data_args(
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

    again, _, _ = experiment.load_data(_data_args(
        '--train-size', '300', '--label-noise', '0.3'))
    numpy.testing.assert_array_equal(_labels(again), _labels(noisy))
    other, _, _ = experiment.load_data(_data_args(
        '--train-size', '300', '--label-noise', '0.3', '--seed', '1'))
    other_clean, _, _ = experiment.load_data(_data_args(
        '--train-size', '300', '--seed', '1'))
    other_changed = _labels(other) != _labels(other_clean)
    assert other_changed.sum() == 90
    assert not numpy.array_equal(other_changed, changed)


def test_label_noise_of_selected_classes_stays_among_them():
    train, _, info = experiment.load_data(_data_args(
        '--classes', '5-9', '--label-noise', '0.5'))
    clean, _, _ = experiment.load_data(_data_args('--classes', '5-9'))
    assert info['n_flipped'] == round(0.5 * len(clean))
    assert (_labels(train) != _labels(clean)).sum() == info['n_flipped']
    assert set(numpy.unique(_labels(train))) == set(range(5))


def test_val_split_holds_out_a_stratified_part(digits):
    full = digits[0]
    args = _data_args('--val-split', '0.2')
    train, held = experiment.split_validation(full, args)
    size = int(round(0.2 * len(full)))
    assert (len(held), len(train)) == (size, len(full) - size)
    # Disjoint and covering: together they are the input, example for
    # example.
    assert _examples(train) + _examples(held) == _examples(full)
    share = size * numpy.bincount(_labels(full)) / len(full)
    assert numpy.all(numpy.abs(numpy.bincount(_labels(held), minlength=10)
                               - share) < 1)
    again_train, again_held = experiment.split_validation(full, args)
    assert _examples(again_held) == _examples(held)
    assert _examples(again_train) == _examples(train)
    _, other = experiment.split_validation(full, _data_args(
        '--val-split', '0.2', '--seed', '1'))
    assert _examples(other) != _examples(held)


def test_val_split_of_a_noisy_subset():
    args = _data_args('--train-size', '300', '--label-noise', '0.3',
                      '--val-split', '0.2')
    noisy, _, _ = experiment.load_data(args)
    train, held = experiment.split_validation(noisy, args)
    assert (len(train), len(held)) == (240, 60)
    assert _examples(train) + _examples(held) == _examples(noisy)


def test_no_val_split_keeps_the_training_set(digits):
    train, held = experiment.split_validation(digits[0], _data_args())
    assert train is digits[0] and held is None


@pytest.mark.parametrize('n, fraction', [(300, 0.001), (300, 0.999),
                                         (3, 0.1)])
def test_val_split_that_holds_out_nothing_or_everything_is_refused(
        digits, n, fraction):
    train = experiment.load_data(_data_args('--train-size', str(n)))[0]
    with pytest.raises(ValueError, match=r'--val-split {}: {} training '
                       'images leave {} for validation'.format(
                           fraction, n, int(round(fraction * n)))):
        experiment.split_validation(train, _data_args(
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
    assert experiment.describe_data(_data_args(*argv)) == expected
