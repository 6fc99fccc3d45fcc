"""The experiment module: the optimizer registry, data, model and device."""
import argparse
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
