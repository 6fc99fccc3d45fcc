"""IVON against the paper's Algorithm 1 in float64, the Price estimate of the
Hessian, the data x sample layout under mpiexec, learning on digits, and
train.py, evaluate.py and --resume end to end."""
import json
import math
import os
import subprocess
import sys

import numpy
import pytest

import chainer_vogn
import chainer
import chainer.functions as F
import chainer.links as L
from chainer_vogn import datasets
from chainer_vogn import models
from chainer_vogn import posterior
from chainer_vogn.posterior_optimizer import HyperparameterError

import mpi_distributed_worker as worker
from bruteforce import MixedNet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, 'train.py')
EVALUATE = os.path.join(REPO, 'evaluate.py')


class PaperIVON(object):
    """Algorithm 1 of Shen et al. (2024) for one parameter, in float64.

    Written from the paper's symbols: mean m, momentum g, Hessian estimate
    h, weight decay delta, effective sample size lambda.  The step size is
    alpha (h0 + delta) with ``rescale`` and every element of the
    preconditioned step is clipped to [-clip, clip], as the reference code
    does (the paper's Algorithm 1 has neither).
    """

    def __init__(self, mean, ess, lr, beta1, beta2, h0, delta, clip=math.inf,
                 rescale=True, debias=True):
        self.m = numpy.array(mean, numpy.float64)
        self.g = numpy.zeros_like(self.m)
        self.h = numpy.full_like(self.m, h0)
        self.ess, self.beta1, self.beta2 = ess, beta1, beta2
        self.delta, self.clip, self.debias = delta, clip, debias
        self.alpha = lr * (h0 + delta) if rescale else lr
        self.t = 0
        self.clipped = 0

    def sigma(self):
        return 1 / numpy.sqrt(self.ess * (self.h + self.delta))

    def step(self, g_hat, h_hat):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        self.g = b1 * self.g + (1 - b1) * g_hat
        self.h = (b2 * self.h + (1 - b2) * h_hat
                  + 0.5 * (1 - b2) ** 2 * (self.h - h_hat) ** 2
                  / (self.h + self.delta))
        g_bar = self.g / (1 - b1 ** self.t) if self.debias else self.g
        direction = (g_bar + self.delta * self.m) / (self.h + self.delta)
        self.clipped += int(numpy.sum(numpy.abs(direction) > self.clip))
        self.m = self.m - self.alpha * numpy.clip(direction, -self.clip,
                                                  self.clip)


def _stream(rng, shape, steps):
    """Shrinking gradients and signed, noisy Hessian estimates (a Price
    estimate from one sample is often negative)."""
    for t in range(steps):
        scale = 0.5 / math.sqrt(1 + t / 50)
        g = rng.randn(*shape) * scale
        h = (1 + rng.rand(*shape)) * (1 + 2 * rng.randn(*shape))
        yield g, h


#: (IVON arguments, PaperIVON arguments): the reference code's defaults,
#: and one setting where beta2 is small (the correction term matters),
#: clipping bites, and lr is neither rescaled nor the momentum debiased.
SETTINGS = [
    (dict(lr=0.1), dict(lr=0.1, beta1=0.9, beta2=0.99999, h0=1.0,
                        delta=1e-4)),
    (dict(lr=0.05, beta1=0.8, beta2=0.9, hess_init=0.3, weight_decay=1e-2,
          clip_radius=0.5, rescale_lr=False, debias=False),
     dict(lr=0.05, beta1=0.8, beta2=0.9, h0=0.3, delta=1e-2, clip=0.5,
          rescale=False, debias=False)),
]


@pytest.mark.parametrize('kwargs, paper', SETTINGS)
def test_rule_follows_the_paper_over_hundreds_of_steps(kwargs, paper):
    steps, ess = 300, 500
    rng = numpy.random.RandomState(7)
    link = L.Linear(4, 3)
    for p in link.params():
        p.array = rng.randn(*p.shape) * 0.1
    chainer_vogn.IVON(ess, **kwargs).setup(link)
    refs = {name: PaperIVON(p.array, ess, **paper)
            for name, p in link.namedparams()}
    start = {name: p.array.copy() for name, p in link.namedparams()}
    streams = {name: _stream(numpy.random.RandomState(i), p.shape, steps)
               for i, (name, p) in enumerate(sorted(link.namedparams()))}
    for _ in range(steps):
        for name, param in sorted(link.namedparams()):
            ref = refs[name]
            numpy.testing.assert_allclose(param.update_rule.sigma(param),
                                          ref.sigma(), rtol=1e-10)
            g, h = next(streams[name])
            ref.step(g, h)
            param.grad = g.copy()
            param.update_rule.curvature = h.copy()
            param.update()
    for name, param in link.namedparams():
        ref, state = refs[name], param.update_rule.state
        numpy.testing.assert_allclose(param.array, ref.m, rtol=1e-10,
                                      atol=1e-14, err_msg=name + ' mean')
        numpy.testing.assert_allclose(state['m'], ref.g, rtol=1e-10,
                                      atol=1e-14, err_msg=name + ' momentum')
        numpy.testing.assert_allclose(state['h'], ref.h, rtol=1e-10,
                                      err_msg=name + ' h')
        # Not agreement on a standstill: the mean and h moved.
        assert numpy.abs(ref.m - start[name]).max() > 1e-2
    if paper.get('clip', math.inf) < math.inf:
        assert sum(ref.clipped for ref in refs.values()) > 0
        # the correction term is what keeps h + delta > 0 under these
        # negative estimates
        assert all((ref.h > 0).all() for ref in refs.values())


def test_rule_differs_from_the_paper_without_the_correction_term():
    """The comparison above can fail: IVON with beta2 = 0.9 against the
    paper's step without its (h - h_hat)^2 term drifts apart."""
    rng = numpy.random.RandomState(3)
    link = L.Linear(4, 3, nobias=True)
    link.W.array = rng.randn(3, 4) * 0.1
    chainer_vogn.IVON(500, lr=0.05, beta2=0.9).setup(link)
    ref = PaperIVON(link.W.array, 500, 0.05, 0.9, 0.9, 1.0, 1e-4)
    for g, h in _stream(numpy.random.RandomState(0), (3, 4), 100):
        ref.h = ref.h - 0.5 * 0.1 ** 2 * (ref.h - h) ** 2 / (ref.h + 1e-4)
        ref.step(g, h)
        link.W.grad = g.copy()
        link.W.update_rule.curvature = h.copy()
        link.W.update()
    assert not numpy.allclose(link.W.update_rule.state['h'], ref.h,
                              rtol=1e-3)


class Quadratic(chainer.Link):
    """loss(w) = (w - c)^T A (w - c) / 2: gradient A (w - c), Hessian A."""

    def __init__(self, a, c, w):
        super(Quadratic, self).__init__()
        self.a, self.c = a, c
        with self.init_scope():
            self.w = chainer.Parameter(numpy.array(w, numpy.float64))

    def loss(self):
        d = F.reshape(self.w - self.c, (1, -1))
        return 0.5 * F.sum(F.matmul(d, self.a) * d)


#: A symmetric A whose diagonal is far from that of A^2 (what the mean of
#: g^2 would estimate) and of sigma^2 A (g eps sigma).
A = numpy.array([[2.0, 0.8, -0.6, 0.0],
                 [0.8, 1.0, 0.5, 0.3],
                 [-0.6, 0.5, 3.0, -0.9],
                 [0.0, 0.3, -0.9, 0.5]])
C = numpy.array([0.5, -1.0, 0.2, 0.0])


class RecordingIVON(chainer_vogn.IVON):
    """IVON that keeps the statistics of its last step."""

    def reduce_statistics(self, grads, curvatures):
        self.seen = grads, curvatures
        return grads, curvatures


def test_price_estimate_has_the_hessian_diagonal_as_mean():
    """E[g eps / sigma] = diag(A) for a quadratic (Price's theorem)."""
    offset = numpy.full(4, 0.3)
    quad = Quadratic(A, C, C + offset)
    # sigma = 1 / sqrt(4 (1 + 0)) = 0.5, so eps / sigma is not eps sigma.
    samples, sigma = 4000, 0.5
    opt = RecordingIVON(4, hess_init=1.0, weight_decay=0.0,
                        num_samples=samples).setup(quad)
    opt.update(quad.loss)
    _, curvatures = opt.seen
    # One estimate is (A offset)_i eps_i / sigma + sum_j A_ij eps_j eps_i:
    # its variance, and the mean's standard error.
    variance = (A @ offset / sigma) ** 2 + (A ** 2).sum(axis=1) + \
        numpy.diag(A) ** 2
    error = numpy.abs(curvatures['/w'] - numpy.diag(A))
    bound = 5 * numpy.sqrt(variance / samples)
    assert (error < bound).all(), (curvatures['/w'], error, bound)


def test_one_step_end_to_end_on_a_quadratic():
    """Samples w = mu + sigma eps with eps from (seed, sample_id, step, k);
    g_hat and h_hat are the means of A (w - mu') and g eps / sigma over the
    K samples; the state then follows the paper's step."""
    mu = C + numpy.array([0.3, -0.2, 0.1, 0.4])
    quad = Quadratic(A, C, mu)
    hp = dict(lr=0.2, beta1=0.8, beta2=0.7, hess_init=0.5, weight_decay=0.1)
    opt = RecordingIVON(20, num_samples=3, seed=5, **hp).setup(quad)
    seen = []

    def lossfun():
        seen.append(quad.w.array.copy())
        return quad.loss()
    opt.update(lossfun)
    ref = PaperIVON(mu, 20, 0.2, 0.8, 0.7, 0.5, 0.1)
    sigma = ref.sigma()
    g_hat, h_hat = 0, 0
    for k in range(3):
        eps = numpy.random.default_rng(
            numpy.random.SeedSequence([5, 0, 1, k])).standard_normal(4)
        numpy.testing.assert_allclose(seen[k], mu + sigma * eps, rtol=1e-12)
        g = A @ (seen[k] - C)
        g_hat = g_hat + g / 3
        h_hat = h_hat + g * eps / sigma / 3
    grads, curvatures = opt.seen
    numpy.testing.assert_allclose(grads['/w'], g_hat, rtol=1e-12)
    numpy.testing.assert_allclose(curvatures['/w'], h_hat, rtol=1e-12)
    ref.step(g_hat, h_hat)
    numpy.testing.assert_allclose(quad.w.array, ref.m, rtol=1e-12)
    numpy.testing.assert_allclose(quad.w.update_rule.state['h'], ref.h,
                                  rtol=1e-12)
    numpy.testing.assert_allclose(opt.posterior_std()['/w'], ref.sigma(),
                                  rtol=1e-12)


@pytest.mark.parametrize('name, value', [
    ('dataset_size', None), ('dataset_size', 0), ('lr', 0), ('beta1', 1.0),
    ('beta2', 1.5), ('hess_init', 0), ('weight_decay', -1e-4),
    ('clip_radius', 0)])
def test_out_of_range_hyperparameter_is_named(name, value):
    kwargs = {'dataset_size': 100, name: value}
    with pytest.raises(HyperparameterError,
                       match='IVON: {} = '.format(name)) as error:
        chainer_vogn.IVON(**kwargs)
    assert error.value.name == name


def test_defaults_are_the_reference_codes():
    opt = chainer_vogn.IVON(100)
    assert (opt.beta1, opt.beta2, opt.hess_init, opt.weight_decay,
            opt.clip_radius, opt.rescale_lr, opt.debias,
            opt.num_samples) == (0.9, 0.99999, 1.0, 1e-4, None, True,
                                 True, 1)


def _emulate(samples):
    """The P = S x D run in one process, in float64: per step, the S weight
    samples of (seed, sample_id, step) and the D shards' gradients from
    Chainer's backward at each, averaged, then :class:`PaperIVON`."""
    hp = worker.IVON_HP
    shards = 4 // samples
    model = MixedNet(seed=0)  # rank 0's initial weights
    names = sorted(name for name, _ in model.namedparams())
    refs = {name: PaperIVON(p.array, worker.N, hp['lr'], hp['beta1'],
                            hp['beta2'], hp['hess_init'],
                            hp['weight_decay'], hp['clip_radius'])
            for name, p in model.namedparams()}
    params = dict(model.namedparams())
    for step in range(1, worker.STEPS + 1):
        x, t = worker.global_batch(step, shards)
        g_hat = {n: 0 for n in names}
        h_hat = {n: 0 for n in names}
        for sample_id in range(samples):
            rng = numpy.random.default_rng(numpy.random.SeedSequence(
                [worker.SEED, sample_id, step, 0]))
            eps = {n: rng.standard_normal(refs[n].m.shape) for n in names}
            for d in range(shards):
                for n in names:
                    params[n].array = refs[n].m + refs[n].sigma() * eps[n]
                model.cleargrads()
                rows = slice(d * worker.PER_RANK, (d + 1) * worker.PER_RANK)
                F.softmax_cross_entropy(model(x[rows]), t[rows]).backward()
                for n in names:
                    g = params[n].grad / (samples * shards)
                    g_hat[n] = g_hat[n] + g
                    h_hat[n] = h_hat[n] + g * eps[n] / refs[n].sigma()
        for n in names:
            refs[n].step(g_hat[n], h_hat[n])
    return refs


@pytest.mark.parametrize('samples', [2, 4, 1])
def test_distributed_matches_one_process_with_the_same_samples(
        mpiexec, tmp_path, samples):
    """mpiexec -n 4 with S sample groups = one process evaluating the S
    samples on the same minibatches; one allreduce per step."""
    result = worker.launch(mpiexec, tmp_path, samples, 'ivon')
    assert result.returncode == 0, result.stdout + result.stderr
    want = _emulate(samples)
    shards = 4 // samples
    for rank in range(4):
        got = numpy.load(str(tmp_path / 'rank{}.npz'.format(rank)))
        assert (int(got['sample_id']), int(got['data_id'])) == \
            (rank // shards, rank % shards)
        assert len(got['calls']) == worker.STEPS
        for name, ref in want.items():
            for key, value in (('mu', ref.m), ('m', ref.g), ('h', ref.h)):
                numpy.testing.assert_allclose(
                    got[key + name], value, rtol=1e-9, atol=1e-13,
                    err_msg='rank {} {} {}'.format(rank, key, name))


def test_learns_digits():
    """A few epochs of a small MLP: the mean and the 10-sample predictive
    both classify the held-out digits well."""
    train, test, _ = datasets.get_dataset('digits')
    x, t = (numpy.stack(a) for a in zip(*train))
    x_test, t_test = (numpy.stack(a) for a in zip(*test))
    model = models.MLP(10, hidden=(64,))
    model(x[:1])
    opt = chainer_vogn.IVON(len(x)).setup(model)
    rng = numpy.random.RandomState(0)
    for _ in range(5):
        order = rng.permutation(len(x))
        for i in range(0, len(x), 32):
            opt.update(lambda a, b: F.softmax_cross_entropy(model(a), b),
                       x[order[i:i + 32]], t[order[i:i + 32]])
    with chainer.using_config('train', False):
        mean_accuracy = float(F.accuracy(model(x_test), t_test).array)
    post = posterior.from_model(model, opt)
    probs = chainer_vogn.predict((post, model), x_test, num_samples=10).probs
    assert mean_accuracy > 0.93
    assert (probs.argmax(axis=1) == t_test).mean() > 0.93
    assert all(s.min() > 0 for s in post.sigma.values())


def test_resumes_from_a_snapshot_exactly(tmp_path):
    """Chainer's serializers save t, m and h; eps depends on (seed, step)
    only, so 2 steps, a snapshot and 2 more equal 4 uninterrupted steps."""
    from chainer import serializers

    def run(model, opt, steps):
        rng = numpy.random.RandomState(opt.t)
        for _ in range(steps):
            x = rng.randn(6, 2, 6, 6)
            t = rng.randint(0, 4, 6).astype(numpy.int32)
            opt.update(lambda a, b: F.softmax_cross_entropy(model(a), b),
                       x, t)

    def fresh():
        model = MixedNet(seed=1)
        for p in model.params():
            p.array = p.array.astype(numpy.float64)
        return model, chainer_vogn.IVON(40, beta2=0.9, seed=3).setup(model)

    whole, opt = fresh()
    run(whole, opt, 2)
    run(whole, opt, 2)
    first, opt = fresh()
    run(first, opt, 2)
    serializers.save_npz(str(tmp_path / 'model.npz'), first)
    serializers.save_npz(str(tmp_path / 'opt.npz'), opt)
    resumed, opt = fresh()
    serializers.load_npz(str(tmp_path / 'model.npz'), resumed)
    serializers.load_npz(str(tmp_path / 'opt.npz'), opt)
    assert opt.t == 2
    run(resumed, opt, 2)
    for (name, a), (_, b) in zip(sorted(whole.namedparams()),
                                 sorted(resumed.namedparams())):
        numpy.testing.assert_array_equal(a.array, b.array, name)
        for key in ('m', 'h'):
            numpy.testing.assert_array_equal(a.update_rule.state[key],
                                             b.update_rule.state[key], name)


def _train(prefix, args):
    return subprocess.run(prefix + [TRAIN, '--optimizer', 'ivon', '--dataset',
                                    'digits', '--no-progress',
                                    '--val-samples', '2'] + args,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
@pytest.mark.mpi
def test_train_evaluate_and_resume_on_one_and_on_two_processes(
        mpiexec, tmp_path):
    """train.py --optimizer ivon on one process and under mpiexec -n 2
    --samples 2 records what the contract gives, evaluate.py samples its
    weights, and --resume continues a run from its snapshot."""
    runs = {'one': ([sys.executable], 1), 'two': (mpiexec(2), 2)}
    for name, (prefix, samples) in runs.items():
        out = str(tmp_path / name)
        result = _train(prefix, ['--samples', str(samples), '--epochs', '1',
                                 '--out', out])
        assert result.returncode == 0, result.stdout + result.stderr
        with open(os.path.join(out, 'config.json')) as f:
            config = json.load(f)
        assert (config['processes'], config['sample_groups'],
                config['data_shards']) == (samples, samples, 1)
        # The reference code's defaults; lr is scaled by D = 1.
        assert (config['lr'], config['lr_used'], config['weight_decay'],
                config['hess_init'], config['tau']) == (None, 0.1, 1e-4,
                                                        1.0, None)
        assert config['dataset_size'] == 1437
        assert 'validation/predictive/nll' in config['final']
        post = chainer_vogn.load_posterior(os.path.join(out, 'model.npz'))
        assert post.meta['optimizer'] == 'ivon'
        assert all(s.min() > 0 for s in post.sigma.values())

    report = str(tmp_path / 'report')
    result = subprocess.run(
        [sys.executable, EVALUATE, str(tmp_path / 'one'),
         str(tmp_path / 'two'), '--mc-samples', '3', '--out', report],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(report, 'report.json')) as f:
        doc = json.load(f)
    assert [entry['optimizer'] for entry in doc['runs']] == ['IVON'] * 2
    assert all(entry['metrics']['accuracy'] > 0.8 for entry in doc['runs'])
    assert set(doc['meta']['T'].values()) == {3}  # weight samples

    out = str(tmp_path / 'one')
    result = _train([sys.executable], ['--epochs', '2', '--out', out,
                                       '--resume'])
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'resuming from epoch 1' in result.stdout
    with open(os.path.join(out, 'log')) as f:
        assert [entry['epoch'] for entry in json.load(f)] == [1, 2]
