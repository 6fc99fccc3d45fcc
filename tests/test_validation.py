"""The predictive validation of train.py against evaluate.py's predictive."""
import types

import numpy
import pytest
from mpi4py import MPI

import chainer_vogn
import chainer
import chainer.functions as F
import chainer.links as L

from chainer_vogn import models
from chainer_vogn import posterior
from chainer_vogn import predictive
from chainer_vogn import validation


def _trained(optimizer, dropout=0.0, steps=5):
    numpy.random.seed(0)
    rng = numpy.random.RandomState(1)
    x = rng.randn(40, 1, 4, 4).astype(numpy.float32)
    t = (x.reshape(40, -1).sum(axis=1) > 0).astype(numpy.int32)
    model = L.Classifier(models.MLP(2, hidden=(8,), dropout=dropout))
    with chainer.using_config('train', False):
        model.predictor(x[:1])
    opt = optimizer.setup(model)
    for _ in range(steps):
        if isinstance(opt, chainer_vogn.VOGN):
            opt.update(lambda: F.softmax_cross_entropy(model.predictor(x), t))
        else:
            opt.update(model, x, t)
    return model, opt, chainer.datasets.TupleDataset(x, t)


def _validate(model, opt, data, method, tmp_path, n_samples=4):
    ext = validation.PredictiveValidation(
        data, model, opt, method, n_samples,
        types.SimpleNamespace(mpi_comm=MPI.COMM_SELF),
        chainer.get_device('@numpy'), seed=3)
    observation = {}
    with chainer.Reporter().scope(observation):
        ext(None)
    after = {'rng': numpy.random.get_state(),
             'params': {n: p.array.copy() for n, p in model.namedparams()}}
    # evaluate.py's path: the saved posterior, its predictive.
    path = str(tmp_path / 'model.npz')
    posterior.save_posterior(path, model, opt)
    probs = predictive.predict(model, posterior.load_posterior(path), method,
                               [data._datasets[0]], n_samples, seed=3)[0].probs
    labels = data._datasets[1]
    want_accuracy = numpy.mean(probs.argmax(axis=1) == labels)
    want_nll = -numpy.mean(numpy.log(probs[numpy.arange(len(labels)),
                                           labels]))
    return observation, after, want_accuracy, want_nll


@pytest.mark.parametrize('method', ['weights', 'dropout'])
def test_reports_the_predictive_evaluate_computes(method, tmp_path):
    if method == 'weights':
        model, opt, data = _trained(chainer_vogn.VOGN(40, prior_precision=5))
    else:
        model, opt, data = _trained(chainer.optimizers.Adam(), dropout=0.5)
    before = {n: p.array.copy() for n, p in model.namedparams()}
    rng_state = numpy.random.get_state()
    got, after, accuracy, nll = _validate(model, opt, data, method, tmp_path)
    assert got[validation.ACCURACY] == pytest.approx(accuracy, abs=1e-12)
    assert got[validation.NLL] == pytest.approx(nll, rel=1e-6)
    # The samples differ from the mean: a T-sample predictive, not a point.
    with chainer.using_config('train', False):
        mean_probs = F.softmax(model.predictor(data._datasets[0])).array
    mean_nll = -numpy.mean(numpy.log(mean_probs[numpy.arange(40),
                                                data._datasets[1]]))
    assert abs(mean_nll - nll) > 1e-4
    # Training goes on from the same mean and the same global generator.
    for name in before:
        numpy.testing.assert_array_equal(after['params'][name], before[name])
    numpy.testing.assert_array_equal(after['rng'][1], rng_state[1])
    assert after['rng'][2] == rng_state[2]


def test_point_method_is_refused():
    model, opt, data = _trained(chainer.optimizers.Adam())
    with pytest.raises(ValueError, match="'weights' or 'dropout'"):
        validation.PredictiveValidation(
            data, model, opt, 'point', 4, None, chainer.get_device('@numpy'))
