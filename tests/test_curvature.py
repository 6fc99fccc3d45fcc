"""The hook's squared gradients against loops over single examples (float64)."""
import numpy
import pytest

import chainer_vogn
import chainer
import chainer.functions as F
import chainer.links as L

from bruteforce import MixedNet, per_example_mixed

RTOL = 1e-10


def _float64(link):
    for p in link.params():
        p.array = p.array.astype(numpy.float64)
    return link


def _hook_values(link, loss_of):
    link.cleargrads()
    hook = chainer_vogn.SquaredGradientHook(link.namedparams())
    loss = loss_of(link)
    with hook:
        loss.backward()
    return hook.squared


def _loop_values(link, loss_of_example, B):
    """(1/B) sum_i (grad l_i)^2 by one backward pass per example."""
    total = {}
    for i in range(B):
        link.cleargrads()
        loss_of_example(link, i).backward()
        for name, p in link.namedparams():
            total[name] = total.get(name, 0) + p.grad ** 2
    return {name: v / B for name, v in total.items()}


def _check(link, per_example_loss, B):
    def mean_loss(l):
        return F.mean(per_example_loss(l, slice(None)))

    def loss_i(l, i):
        return F.sum(per_example_loss(l, slice(i, i + 1)))

    got = _hook_values(link, mean_loss)
    want = _loop_values(link, loss_i, B)
    assert set(got) == set(want)
    for name in want:
        numpy.testing.assert_allclose(got[name], want[name], rtol=RTOL,
                                      atol=1e-14, err_msg=name)


def test_linear():
    rng = numpy.random.RandomState(0)
    link = _float64(L.Linear(5, 3, initialW=rng.randn(3, 5),
                            initial_bias=rng.randn(3)))
    x = rng.randn(7, 5)
    t = rng.randint(0, 3, 7).astype(numpy.int32)
    _check(link, lambda l, s: F.softmax_cross_entropy(
        l(x[s]), t[s], reduce='no'), 7)


def test_linear_without_bias_and_image_input():
    rng = numpy.random.RandomState(1)
    link = _float64(L.Linear(2 * 3 * 3, 4, nobias=True,
                            initialW=rng.randn(4, 18)))
    x = rng.randn(5, 2, 3, 3)
    r = rng.randn(5, 4)
    _check(link, lambda l, s: F.sum(F.tanh(l(x[s])) * r[s], axis=1), 5)


@pytest.mark.parametrize('kwargs', [
    dict(stride=2, pad=1),
    dict(stride=1, pad=2, dilate=2),
    dict(stride=1, pad=1, groups=2),
    dict(stride=(2, 1), pad=(0, 1), nobias=True),
], ids=['stride2-pad1', 'dilate2', 'groups2', 'asymmetric-nobias'])
def test_convolution_2d(kwargs):
    rng = numpy.random.RandomState(2)
    groups = kwargs.get('groups', 1)
    link = _float64(L.Convolution2D(
        4, 6, 3, initialW=rng.randn(6, 4 // groups, 3, 3),
        initial_bias=rng.randn(6), **kwargs))
    x = rng.randn(5, 4, 7, 6)
    target = rng.randn(*link(x).shape)
    _check(link, lambda l, s: F.sum(
        (F.tanh(l(x[s])) - target[s]) ** 2, axis=(1, 2, 3)), 5)


def test_convolution_2d_chunked(monkeypatch):
    """The chunked batch loop gives the same answer as one chunk."""
    from chainer_vogn import curvature
    monkeypatch.setattr(curvature, 'CONV_CHUNK_ELEMENTS', 1)
    test_convolution_2d(dict(stride=2, pad=1))


def test_batch_normalization_batch_statistics_held_constant():
    """Per-example loop with the whole batch's mean and variance fixed."""
    rng = numpy.random.RandomState(3)
    C = 3
    bn = L.BatchNormalization(C, dtype=numpy.float64)
    bn.gamma.array[:] = rng.randn(C)
    bn.beta.array[:] = rng.randn(C)
    x = rng.randn(6, C, 4, 5)
    r = rng.randn(6, C, 4, 5)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))

    def loss_i(link, i):
        y = F.fixed_batch_normalization(x[i:i + 1], link.gamma, link.beta,
                                        mean, var, eps=bn.eps)
        return F.sum(F.tanh(y) * r[i:i + 1])

    def mean_loss(link):
        return F.sum(F.tanh(link(x)) * r) / len(x)

    got = _hook_values(bn, mean_loss)
    want = _loop_values(bn, loss_i, 6)
    for name in ('/gamma', '/beta'):
        numpy.testing.assert_allclose(got[name], want[name], rtol=RTOL,
                                      err_msg=name)


def test_squared_gradients_keep_the_parameter_dtype_at_large_batches():
    """A batch of 2**16 or more kept float32 h float32 (train.py --batchsize
    65536 crashed: NumPy 1 made B * h float64)."""
    rng = numpy.random.RandomState(5)
    net = chainer.Sequential(L.Convolution2D(1, 2, 1), L.BatchNormalization(2),
                             L.Linear(8, 3))
    x = rng.rand(2 ** 16, 1, 2, 2).astype(numpy.float32)
    got = _hook_values(net, lambda link: F.mean(link(x)))
    assert set(got) == {name for name, _ in net.namedparams()}
    for name, value in got.items():
        assert value.dtype == numpy.float32, name


def test_mixed_model_against_per_example_copies():
    """Layers feeding BatchNormalization get its coupled output gradient."""
    rng = numpy.random.RandomState(4)
    model = _float64(MixedNet(seed=4))
    x = rng.randn(5, 2, 6, 6)
    t = rng.randint(0, 4, 5).astype(numpy.int32)
    got = _hook_values(model, lambda m: F.softmax_cross_entropy(m(x), t))
    grads = {name: p.grad for name, p in model.namedparams()}
    weights = {name: p.array for name, p in model.namedparams()}
    want_g, want_h = per_example_mixed(weights, x, t)
    for name in weights:
        numpy.testing.assert_allclose(got[name], want_h[name], rtol=RTOL,
                                      atol=1e-14, err_msg=name)
        numpy.testing.assert_allclose(grads[name], want_g[name], rtol=RTOL,
                                      atol=1e-14, err_msg=name)


def test_shared_weights_are_refused():
    link = L.Linear(3, 3)
    x = numpy.ones((2, 3), numpy.float32)
    with pytest.raises(ValueError, match='/W is used more than once'):
        _hook_values(link, lambda l: F.sum(l(l(x))))


def test_batch_normalization_in_test_mode_is_refused():
    bn = L.BatchNormalization(2)
    x = numpy.random.rand(4, 2).astype(numpy.float32)
    with chainer.using_config('train', False):
        with pytest.raises(ValueError, match='test mode'):
            _hook_values(bn, lambda l: F.sum(l(x)))
