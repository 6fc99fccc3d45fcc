"""The optimizer registry: every entry builds an optimizer that trains."""
import numpy
import pytest

import chainer
import chainermn

from chainer_vogn import registry
from chainer_vogn import run_options
from chainer_vogn import run_setup
from chainer_vogn.posterior_optimizer import PosteriorOptimizer


def _args(optimizer, **overrides):
    args = run_options.parse_args(['--optimizer', optimizer])
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


@pytest.fixture(scope='module')
def comm():
    return chainermn.create_communicator('naive')


@pytest.mark.parametrize('name', list(registry.OPTIMIZERS))
def test_every_registered_optimizer_trains_a_step(comm, name):
    """The builder returns an optimizer set up on the model that moves its
    weights, whose lr_attr --lr-milestones can decay, with --lr as that
    hyperparameter's value."""
    spec = registry.optimizer_spec(name)
    args = _args(name, lr=0.05)
    train, _, info = run_setup.load_data(args)
    numpy.random.seed(0)
    model = run_setup.build_model(args, info)
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
    learns_posterior = isinstance(optimizer, PosteriorOptimizer)
    assert learns_posterior == (spec.sampling == 'weights')
    assert (spec.posterior is not None) == learns_posterior
    assert spec.sampling in registry.SAMPLINGS


def test_mcdropout_is_adam_sampled_with_dropout(comm):
    spec = registry.optimizer_spec('mcdropout')
    args = _args('mcdropout')
    assert (spec.sampling, args.dropout, spec.label) == ('dropout', 0.5,
                                                         'MC dropout')
    model = run_setup.build_model(args, {'n_classes': 3, 'in_channels': 1})
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
        optimizer = registry.OPTIMIZERS[name].build(args, comm, model, 10)
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
    with pytest.raises(ValueError, match="'rmsprop'.*vogn, ivon, adam"):
        registry.optimizer_spec('rmsprop')
