"""A run's options: one conversion and check, whatever their source."""
import dataclasses
import json

import pytest

import chainer

from chainer_vogn import run_options


def test_defaults_come_from_the_optimizers():
    """--lr and VOGN's options default to the optimizers' own defaults
    (VOGN's lr to None: DistributedVOGN scales it with the data shards)."""
    from chainer_vogn import optimizer as vogn_module
    hp = vogn_module._default_hyperparam
    args = run_options.parse_args([])
    assert args.lr is None
    for name in ('beta1', 'beta2', 'prior_precision', 'tau', 'damping',
                 'init_precision', 'aug_factor', 'bias_correction',
                 'tau_warmup_steps', 'tau_init'):
        assert getattr(args, name) == getattr(hp, name), name
    assert run_options.parse_args(['--optimizer', 'adam']).lr == \
        chainer.optimizers.Adam().alpha
    assert run_options.parse_args(['--optimizer', 'sgd']).lr == \
        chainer.optimizers.MomentumSGD().lr


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
    ('classes', '-1-4', "bad class list '-1-4'"),
    ('lr_milestones', '-5,10', 'lr_milestones: [-5, 10] is invalid'),
    ('optimizer', 'rmsprop', "optimizer: 'rmsprop' is not one of"),
    ('train_size', 0, 'train_size: 0 is invalid; it must be an integer >= 1'),
    ('label_noise', 1, 'label_noise: 1.0 is invalid; it must be a fraction '
                       'in [0, 1)'),
    ('label_noise', -0.1, 'label_noise: -0.1 is invalid'),
    ('label_noise', float('nan'), 'label_noise: nan is invalid'),
    ('lr', float('inf'), 'lr: inf is invalid; it must be a finite number'),
    ('prior_precision', float('inf'), 'prior_precision: inf is invalid; it '
                                      'must be a finite number'),
    ('tau_init', float('nan'), 'tau_init: nan is invalid; it must be a '
                               'finite number'),
    ('val_split', 1, 'val_split: 1.0 is invalid; it must be a fraction in '
                     '[0, 1)'),
    ('val_split', -0.2, 'val_split: -0.2 is invalid'),
    ('damping', -1, 'VOGN: damping = -1.0 is invalid'),
    ('tau', 0, 'VOGN: tau = 0.0 is invalid'),
])
def test_same_check_from_python_command_line_and_file(
        tmp_path, capsys, option, value, message):
    with pytest.raises(run_options.ConfigError) as error:
        run_options.RunConfig(**{option: value})
    assert message in str(error.value) and error.value.option == option

    flag = '--' + option.replace('_', '-')
    with pytest.raises(SystemExit) as exit:
        run_options.parse_args([flag, str(value)])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err

    config = tmp_path / 'c.json'
    config.write_text(json.dumps({option: value}))
    with pytest.raises(SystemExit):
        run_options.parse_args(['--config', str(config)])
    err = capsys.readouterr().err
    assert err.startswith('train.py: error: --config {}: '.format(config))
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize('value', [1.5, True, '10x', [3]])
def test_epochs_must_be_an_integer(value):
    with pytest.raises(run_options.ConfigError, match='epochs: .* is invalid'):
        run_options.RunConfig(epochs=value)


def test_values_are_converted_as_on_the_command_line():
    """Strings (YAML reads 1e-3 as one) and ints become the option's type."""
    config = run_options.RunConfig(lr='1e-3', epochs='7', out=2024,
                                  prior_precision=10, lr_milestones='2,4')
    assert (config.lr, config.epochs, config.out, config.prior_precision,
            config.lr_milestones) == (1e-3, 7, '2024', 10.0, [2, 4])
    assert isinstance(config.prior_precision, float)


def test_command_line_value_wins_even_when_it_equals_the_default(tmp_path):
    config = tmp_path / 'c.yaml'
    config.write_text('epochs: 3\nseed: 5\n')
    args = run_options.parse_args(['--config', str(config), '--epochs', '10'])
    assert (args.epochs, args.seed, args.config) == (10, 5, str(config))


def test_non_finite_values_are_refused_from_yaml_and_records(tmp_path,
                                                             capsys):
    config = tmp_path / 'c.yaml'
    config.write_text('lr: .inf\n')
    with pytest.raises(SystemExit):
        run_options.parse_args(['--config', str(config)])
    assert 'lr: inf is invalid; it must be a finite number' in \
        capsys.readouterr().err
    with pytest.raises(run_options.ConfigError, match='tau: nan is invalid'):
        run_options.RunConfig.from_record({'tau': float('nan')})


def test_combinations():
    with pytest.raises(run_options.ConfigError, match='samples: 2 applies to '
                                                     'vogn or ivon only'):
        run_options.RunConfig(optimizer='sgd', samples=2)
    with pytest.raises(run_options.ConfigError, match='needs dropout > 0'):
        run_options.RunConfig(optimizer='mcdropout', dropout=0)
    with pytest.raises(run_options.ConfigError, match='pure_nccl needs GPUs'):
        run_options.RunConfig(communicator='pure_nccl')
    with pytest.raises(run_options.ConfigError, match='tau_init'):
        run_options.RunConfig(tau_warmup_steps=10, tau_init=0)
    assert run_options.RunConfig(optimizer='mcdropout').dropout == 0.5
    assert run_options.RunConfig(optimizer='sgd').lr == 0.01


def test_from_record_reads_a_runs_config_json():
    record = dict(dataclasses.asdict(run_options.RunConfig(
        optimizer='adam', classes='0-4')), processes=4, versions={},
        finished=True)
    config = run_options.RunConfig.from_record(record)
    assert (config.optimizer, config.classes, config.lr) == ('adam', '0-4',
                                                             1e-3)
    # Records of earlier versions lack newer options: defaults fill them.
    assert run_options.RunConfig.from_record({'optimizer': 'sgd'}).momentum \
        == 0.9
    with pytest.raises(run_options.ConfigError, match='mapping'):
        run_options.RunConfig.from_record([1, 2])
