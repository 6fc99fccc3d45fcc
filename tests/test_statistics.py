"""VOGN's statistical behaviour on Bayesian logistic regression."""
import numpy
import pytest
import scipy.optimize

import chainer_vogn
import chainer.functions as F
import chainer.links as L

D = 3
W_TRUE = numpy.array([1.5, -2.0, 0.5])


def _data(n, seed=0):
    rng = numpy.random.RandomState(seed)
    x = rng.randn(n, D)
    p = 1 / (1 + numpy.exp(-x @ W_TRUE))
    t = (rng.rand(n) < p).astype(numpy.int32)
    return x, t


def _fit(x, t, steps, prior_precision=1.0, seed=0):
    model = L.Linear(D, 1, nobias=True, initialW=numpy.zeros((1, D)))
    model.W.array = model.W.array.astype(numpy.float64)
    opt = chainer_vogn.VOGN(len(x), lr=0.1, beta1=0.9, beta2=0.99, tau=1.0,
                            prior_precision=prior_precision, damping=0.0,
                            seed=seed).setup(model)

    def lossfun(a, b):
        return F.sigmoid_cross_entropy(model(a), b[:, None])

    for _ in range(steps):
        opt.update(lossfun, x, t)  # full batch
    return model, opt


def _map(x, t, prior_precision):
    """MAP weights of sum_i l_i + prior_precision/2 |w|^2 by L-BFGS."""
    def objective(w):
        z = x @ w
        nll = numpy.sum(numpy.logaddexp(0, z) - t * z)
        return nll + 0.5 * prior_precision * w @ w
    return scipy.optimize.minimize(objective, numpy.zeros(D),
                                   method='L-BFGS-B').x


def test_mean_converges_near_the_map():
    x, t = _data(2000)
    model, _ = _fit(x, t, 300)
    w_map = _map(x, t, 1.0)
    err = numpy.linalg.norm(model.W.array[0] - w_map)
    assert err < 0.1 * numpy.linalg.norm(w_map), (model.W.array, w_map)


def test_sigma_shrinks_as_one_over_sqrt_n():
    x, t = _data(3200, seed=1)
    small = _fit(x[:800], t[:800], 200)[1].posterior_std()['/W']
    large = _fit(x, t, 200)[1].posterior_std()['/W']
    ratio = small / large
    # N grows 4x: sigma should halve (up to the change in s itself).
    assert numpy.all((ratio > 1.7) & (ratio < 2.3)), ratio


def test_draws_match_mu_and_sigma():
    x, t = _data(500, seed=2)
    model, opt = _fit(x, t, 50)
    param = model.W
    mu = param.array.copy()
    sig = param.update_rule.sigma(param)
    n = 4000
    draws = numpy.stack([
        param.update_rule.sample(
            param, opt._draw_eps([('/W', param)], step, 0)['/W'])
        for step in range(opt.t + 1, opt.t + 1 + n)])
    numpy.testing.assert_array_equal(param.array, mu)  # sampling is pure
    se = sig / numpy.sqrt(n)
    assert numpy.all(numpy.abs(draws.mean(axis=0) - mu) < 4 * se)
    numpy.testing.assert_allclose(draws.std(axis=0), sig, rtol=0.06)


@pytest.mark.parametrize('sample_id', [0, 1])
def test_sample_groups_draw_independent_noise(sample_id):
    x, t = _data(100)
    model, opt = _fit(x, t, 2)
    named = [('/W', model.W)]
    mine = opt._draw_eps(named, 5, 0)['/W']
    opt.sample_id = sample_id + 1
    other = opt._draw_eps(named, 5, 0)['/W']
    assert not numpy.allclose(mine, other)
    opt.sample_id = sample_id
    numpy.testing.assert_array_equal(
        opt._draw_eps(named, 5, 0)['/W'],
        opt._draw_eps(named, 5, 0)['/W'])
