"""The GPU path (CuPy kernels, im2col_gpu) against the CPU path.

Skipped, with the reason, where CuPy or a GPU is missing; bench/gpu_check.sh
runs this file on a machine with an NVIDIA GPU.
"""
import numpy
import pytest

import chainer_vogn
import chainer.functions as F
from chainer.backends import cuda

from bruteforce import MixedNet


def _gpu_available():
    if not cuda.available:
        return False, 'CuPy is not installed (pip install cupy-cuda12x)'
    try:
        count = cuda.cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver
        return False, 'no usable CUDA device: {}'.format(e)
    return count > 0, 'no CUDA device'


_ok, _why = _gpu_available()
pytestmark = pytest.mark.skipif(not _ok, reason=_why)


def _pair(dtype, seed=0, optimizer=chainer_vogn.VOGN, **kwargs):
    """The same MixedNet and ``optimizer(50, **kwargs)`` (VOGN: lr 0.05,
    prior precision 2 unless given) on the CPU and on GPU 0."""
    if optimizer is chainer_vogn.VOGN:
        kwargs = dict(dict(lr=0.05, prior_precision=2.0), **kwargs)
    models = []
    for device in ('@numpy', '@cupy:0'):
        model = MixedNet(seed=seed)
        for p in model.params():
            p.array = p.array.astype(dtype)
        model.to_device(device)
        opt = optimizer(50, **kwargs).setup(model)
        models.append((model, opt))
    return models


def _same_eps(opt_cpu, opt_gpu):
    """Make the GPU optimizer use the CPU optimizer's eps, sent to the GPU."""
    def draw(named, step, k):
        host = opt_cpu._draw_eps(opt_cpu._named_params(), step, k)
        return {n: cuda.to_gpu(v) for n, v in host.items()}
    opt_gpu._draw_eps = draw


def _steps_match_cpu(pair, dtype, rtol):
    """Three steps on the CPU and on the GPU with the same eps: the same
    mu, state and sigma."""
    (cpu, opt_c), (gpu, opt_g) = pair
    _same_eps(opt_c, opt_g)
    rng = numpy.random.RandomState(0)
    for _ in range(3):
        x = rng.randn(8, 2, 6, 6).astype(dtype)
        t = rng.randint(0, 4, 8).astype(numpy.int32)
        opt_c.update(lambda a, b: F.softmax_cross_entropy(cpu(a), b), x, t)
        opt_g.update(lambda a, b: F.softmax_cross_entropy(gpu(a), b),
                     cuda.to_gpu(x), cuda.to_gpu(t))
    for (name, pc), (_, pg) in zip(sorted(cpu.namedparams()),
                                   sorted(gpu.namedparams())):
        numpy.testing.assert_allclose(cuda.to_cpu(pg.array), pc.array,
                                      rtol=rtol, atol=rtol, err_msg=name)
        for key in pc.update_rule.state:
            numpy.testing.assert_allclose(
                cuda.to_cpu(pg.update_rule.state[key]),
                pc.update_rule.state[key], rtol=rtol, atol=rtol,
                err_msg=name + ' ' + key)
    std_c, std_g = opt_c.posterior_std(), opt_g.posterior_std()
    for name in std_c:
        numpy.testing.assert_allclose(cuda.to_cpu(std_g[name]), std_c[name],
                                      rtol=rtol)


@pytest.mark.parametrize('dtype, rtol', [(numpy.float64, 1e-9),
                                         (numpy.float32, 2e-4)])
def test_steps_match_cpu(dtype, rtol):
    _steps_match_cpu(_pair(dtype, init_precision=1.0, num_samples=2),
                     dtype, rtol)


@pytest.mark.parametrize('dtype, rtol', [(numpy.float64, 1e-9),
                                         (numpy.float32, 2e-4)])
def test_ivon_kernel_matches_cpu(dtype, rtol):
    """beta2 = 0.9 so that h and its correction term move; a clip radius
    of 0.2 clips about a third of the update here."""
    _steps_match_cpu(_pair(dtype, optimizer=chainer_vogn.IVON, lr=0.1,
                           beta2=0.9, hess_init=0.5, clip_radius=0.2,
                           num_samples=2), dtype, rtol)


def test_hook_matches_cpu_for_grouped_dilated_convolution():
    import chainer.links as L
    rng = numpy.random.RandomState(1)
    x = rng.randn(5, 4, 9, 9)
    values = []
    for device in ('@numpy', '@cupy:0'):
        link = L.Convolution2D(4, 6, 3, stride=2, pad=2, dilate=2, groups=2,
                               initialW=rng.randn(6, 2, 3, 3) * 0 + 0.3)
        for p in link.params():
            p.array = p.array.astype(numpy.float64)
        link.to_device(device)
        hook = chainer_vogn.SquaredGradientHook(link.namedparams())
        xd = link.device.send(x)
        with hook:
            F.mean(F.sum(F.tanh(link(xd)) ** 2, axis=(1, 2, 3))).backward()
        values.append({k: cuda.to_cpu(v) for k, v in hook.squared.items()})
    for name in values[0]:
        numpy.testing.assert_allclose(values[1][name], values[0][name],
                                      rtol=1e-10, err_msg=name)


def test_gpu_draws_follow_mu_and_sigma():
    (_, _), (gpu, opt) = _pair(numpy.float32, init_precision=0.5)
    named = opt._named_params()
    param = gpu.fc.W
    sig = cuda.to_cpu(param.update_rule.sigma(param))
    draws = numpy.stack([cuda.to_cpu(param.update_rule.sample(
        param, opt._draw_eps(named, step, 0)['/fc/W']))
        for step in range(1, 2001)])
    mu = cuda.to_cpu(param.array)
    assert numpy.all(numpy.abs(draws.mean(0) - mu) < 5 * sig / numpy.sqrt(2000))
    numpy.testing.assert_allclose(draws.std(0), sig, rtol=0.1)


def test_predict_on_the_gpu_matches_the_cpu(tmp_path):
    """chainer_vogn.predict with device='@cupy:0': the same weight samples
    (drawn on the host from (seed, t)), so the same probabilities."""
    import chainer.links as L
    from chainer_vogn import models
    model = L.Classifier(models.MLP(3, hidden=(16,)))
    x = numpy.random.RandomState(0).rand(20, 1, 4, 4).astype(numpy.float32)
    opt = chainer_vogn.VOGN(len(x), lr=1e-2).setup(model)
    opt.update(model, x, numpy.arange(len(x), dtype=numpy.int32) % 3)
    path = str(tmp_path / 'model.npz')
    chainer_vogn.save_posterior(path, model, opt)
    post = chainer_vogn.load_posterior(path)
    found = {device: chainer_vogn.predict((post, model), x, num_samples=5,
                                          device=device)
             for device in (None, '@cupy:0')}
    numpy.testing.assert_allclose(found['@cupy:0'].probs, found[None].probs,
                                  rtol=1e-4, atol=1e-6)
    assert isinstance(found['@cupy:0'].probs, numpy.ndarray)
