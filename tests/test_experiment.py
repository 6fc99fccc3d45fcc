"""The experiment module: the optimizer registry, data, model and device."""
import argparse

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
    """--lr and VOGN's options default to the optimizers' own defaults."""
    from chainer_vogn import optimizer as vogn_module
    hp = vogn_module._default_hyperparam
    args = experiment.parse_args([])
    for name in ('lr', 'beta1', 'beta2', 'prior_precision', 'tau', 'damping',
                 'init_precision', 'aug_factor', 'bias_correction',
                 'tau_warmup_steps', 'tau_init'):
        assert getattr(args, name) == getattr(hp, name), name
    assert experiment.parse_args(['--optimizer', 'sgd']).lr == \
        chainer.optimizers.MomentumSGD().lr


def test_conv_nets_get_cifar_sized_digits():
    args = argparse.Namespace(dataset='digits', arch='lenet5')
    assert experiment.image_size_for(args) == 32
    args.arch = 'mlp'
    assert experiment.image_size_for(args) is None


def test_cpu_device():
    assert experiment.select_device(-1).xp is numpy
