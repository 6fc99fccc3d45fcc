"""VOGN against the spec's formulas, by hand, in float64."""
import numpy
import pytest

import chainer_vogn
import chainer
import chainer.functions as F
import chainer.links as L
from chainer import serializers

from bruteforce import MixedNet, per_example_mixed, sigma, vogn_step

HP = dict(dataset_size=50, lr=0.1, beta1=0.8, beta2=0.95,
          prior_precision=2.0, tau=0.5, damping=1e-3, aug_factor=2.0)
POINT = ('/bn/gamma', '/bn/beta')
RTOL = 1e-10


def _setup(seed=0, **kwargs):
    model = MixedNet(seed=seed)
    for p in model.params():
        p.array = p.array.astype(numpy.float64)
    opt = chainer_vogn.VOGN(**dict(HP, **kwargs)).setup(model)
    rng = numpy.random.RandomState(seed + 100)
    x = rng.randn(6, 2, 6, 6)
    t = rng.randint(0, 4, 6).astype(numpy.int32)
    return model, opt, x, t


def _recording_lossfun(model, seen):
    def lossfun(x, t):
        seen.append({n: p.array.copy() for n, p in model.namedparams()})
        return F.softmax_cross_entropy(model(x), t)
    return lossfun


def _state(model, opt):
    return {n: dict(mu=p.array.copy(), m=p.update_rule.state['m'].copy(),
                    s=p.update_rule.state['s'].copy())
            for n, p in model.namedparams()}


def _assert_state(model, want):
    for name, p in model.namedparams():
        for key, got in (('mu', p.array), ('m', p.update_rule.state['m']),
                         ('s', p.update_rule.state['s'])):
            numpy.testing.assert_allclose(got, want[name][key], rtol=RTOL,
                                          atol=1e-15,
                                          err_msg='{} {}'.format(name, key))


def _expected_eps(opt, model, step, k):
    """eps as the spec defines it: a generator of (seed, sample_id, step)."""
    seq = numpy.random.SeedSequence([opt.seed, opt.sample_id, step, k])
    rng = numpy.random.default_rng(seq)
    return {n: rng.standard_normal(p.array.shape)
            for n, p in sorted(model.namedparams())}


def test_first_step_without_init_precision_uses_the_mean():
    model, opt, x, t = _setup()
    start = {n: dict(mu=p.array.copy(), m=numpy.zeros_like(p.array), s=None)
             for n, p in model.namedparams()}
    seen = []
    opt.update(_recording_lossfun(model, seen), x, t)
    assert len(seen) == 1
    for name in start:  # t = 1, s unset: w = mu exactly
        numpy.testing.assert_array_equal(seen[0][name], start[name]['mu'])
    stats = [per_example_mixed(seen[0], x, t)]
    _assert_state(model, vogn_step(start, seen, stats, 1, HP, POINT))


def test_first_step_with_init_precision_samples_around_the_mean():
    model, opt, x, t = _setup(init_precision=4.0)
    start = {n: dict(mu=p.array.copy(), m=numpy.zeros_like(p.array),
                     s=numpy.full_like(p.array, 4.0))
             for n, p in model.namedparams()}
    seen = []
    opt.update(_recording_lossfun(model, seen), x, t)
    sig = sigma(start, HP, POINT)
    eps = _expected_eps(opt, model, 1, 0)
    for name in start:
        numpy.testing.assert_allclose(
            seen[0][name], start[name]['mu'] + sig[name] * eps[name],
            rtol=RTOL, err_msg=name)
    for name in POINT:  # point estimates are not perturbed
        numpy.testing.assert_array_equal(seen[0][name], start[name]['mu'])
    stats = [per_example_mixed(seen[0], x, t)]
    _assert_state(model, vogn_step(start, seen, stats, 1, HP, POINT))


def test_second_step_with_bias_correction():
    model, opt, x, t = _setup(seed=3)
    opt.update(_recording_lossfun(model, []), x, t)
    after_one = _state(model, opt)
    seen = []
    x2 = x[::-1].copy()
    opt.update(_recording_lossfun(model, seen), x2, t[::-1].copy())
    sig = sigma(after_one, HP, POINT)
    eps = _expected_eps(opt, model, 2, 0)
    for name in after_one:
        numpy.testing.assert_allclose(
            seen[0][name], after_one[name]['mu'] + sig[name] * eps[name],
            rtol=RTOL, err_msg=name)
    stats = [per_example_mixed(seen[0], x2, t[::-1].copy())]
    want = vogn_step(after_one, seen, stats, 2, HP, POINT)
    _assert_state(model, want)


def test_second_step_without_bias_correction():
    model, opt, x, t = _setup(seed=3, bias_correction=False)
    opt.update(_recording_lossfun(model, []), x, t)
    after_one = _state(model, opt)
    seen = []
    opt.update(_recording_lossfun(model, seen), x, t)
    hp = dict(HP, bias_correction=False)
    stats = [per_example_mixed(seen[0], x, t)]
    want = vogn_step(after_one, seen, stats, 2, hp, POINT)
    _assert_state(model, want)
    corrected = vogn_step(after_one, seen, stats, 2, HP, POINT)
    assert not numpy.allclose(want['/fc/W']['mu'], corrected['/fc/W']['mu'])


def test_num_samples_averages_separate_samples():
    K = 3
    model, opt, x, t = _setup(seed=5, init_precision=1.0, num_samples=K)
    start = {
        n: dict(mu=p.array.copy(), m=numpy.zeros_like(p.array),
                s=numpy.full_like(p.array, 1.0))
        for n, p in model.namedparams()}
    seen = []
    opt.update(_recording_lossfun(model, seen), x, t)
    assert len(seen) == K
    sig = sigma(start, HP, POINT)
    for k in range(K):
        eps = _expected_eps(opt, model, 1, k)
        numpy.testing.assert_allclose(
            seen[k]['/conv/W'], start['/conv/W']['mu']
            + sig['/conv/W'] * eps['/conv/W'], rtol=RTOL)
    assert not numpy.allclose(seen[0]['/fc/W'], seen[1]['/fc/W'])
    stats = [per_example_mixed(w, x, t) for w in seen]
    _assert_state(model, vogn_step(start, seen, stats, 1, HP, POINT))


def test_tau_warmup_is_linear_from_tau_init():
    hp = chainer_vogn.VOGN(10, tau=1.0, tau_init=0.2,
                           tau_warmup_steps=4).hyperparam
    from chainer_vogn.optimizer import current_tau
    got = [current_tau(hp, t) for t in range(1, 8)]
    numpy.testing.assert_allclose(got, [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])


def test_warmup_tau_enters_sigma_and_prior():
    model, opt, x, t = _setup(init_precision=2.0, tau_warmup_steps=10,
                              tau_init=0.05)
    p = model.fc.W
    want = numpy.sqrt(0.05 / (100 * (2.0 + 0.05 * 2.0 / 100 + 1e-3)))
    numpy.testing.assert_allclose(opt.posterior_std()['/fc/W'],
                                  numpy.full_like(p.array, want), rtol=RTOL)


def _train(opt, model, batches, steps):
    for i in range(steps):
        x, t = batches[i % len(batches)]
        opt.update(lambda a, b: F.softmax_cross_entropy(model(a), b), x, t)


def _batches(seed=0):
    rng = numpy.random.RandomState(seed)
    return [(rng.randn(4, 2, 6, 6), rng.randint(0, 4, 4).astype(numpy.int32))
            for _ in range(3)]


def test_save_reload_continue_is_bit_identical(tmp_path):
    batches = _batches()
    model_a, opt_a, _, _ = _setup(seed=7)
    _train(opt_a, model_a, batches, 5)

    model_b, opt_b, _, _ = _setup(seed=7)
    _train(opt_b, model_b, batches, 3)
    serializers.save_npz(str(tmp_path / 'model.npz'), model_b)
    serializers.save_npz(str(tmp_path / 'opt.npz'), opt_b)
    model_c, opt_c, _, _ = _setup(seed=99)  # different weights, reloaded
    serializers.load_npz(str(tmp_path / 'model.npz'), model_c)
    serializers.load_npz(str(tmp_path / 'opt.npz'), opt_c)
    assert opt_c.t == 3
    for i in range(3, 5):
        x, t = batches[i % len(batches)]
        opt_c.update(lambda a, b: F.softmax_cross_entropy(model_c(a), b),
                     x, t)
    for (name, pa), (_, pc) in zip(sorted(model_a.namedparams()),
                                   sorted(model_c.namedparams())):
        numpy.testing.assert_array_equal(pa.array, pc.array, err_msg=name)
        for key in ('m', 's'):
            numpy.testing.assert_array_equal(
                pa.update_rule.state[key], pc.update_rule.state[key])


def test_posterior_round_trip(tmp_path):
    model, opt, x, t = _setup(seed=8)
    _train(opt, model, _batches(8), 2)
    path = str(tmp_path / 'posterior.npz')
    chainer_vogn.save_posterior(path, model, opt, meta={'arch': 'mixed'})
    post = chainer_vogn.load_posterior(path)
    assert post.meta == {'arch': 'mixed', 'step': 2}
    sig = sigma(_state(model, opt), HP, POINT)
    for name, p in model.namedparams():
        numpy.testing.assert_array_equal(post.mu[name], p.array)
        numpy.testing.assert_allclose(post.sigma[name], sig[name], rtol=RTOL)
    numpy.testing.assert_array_equal(post.persistent['/bn/avg_mean'],
                                     model.bn.avg_mean)
    fresh = MixedNet(seed=1)
    for p in fresh.params():
        p.array = p.array.astype(numpy.float64)
    post.load_into(fresh)
    numpy.testing.assert_array_equal(fresh.fc.W.array, model.fc.W.array)
    numpy.testing.assert_array_equal(fresh.bn.avg_var, model.bn.avg_var)
    with pytest.raises(ValueError, match='does not fit'):
        post.load_into(MixedNet(channels=5))



# Chainer's optimizer contract: hooks and reports

def _start(model):
    return {n: dict(mu=p.array.copy(), m=numpy.zeros_like(p.array), s=None)
            for n, p in model.namedparams()}


def _lossfun(model):
    return lambda a, b: F.softmax_cross_entropy(model(a), b)


def test_hooks_run_once_per_step_at_their_timings():
    model, opt, x, t = _setup(num_samples=2)
    start = _start(model)
    calls = []

    def pre(optimizer):
        calls.append(('pre', optimizer.t,
                      {n: (p.array.copy(), p.grad.copy())
                       for n, p in model.namedparams()}))

    def post(optimizer):
        calls.append(('post', optimizer.t,
                      {n: p.array.copy() for n, p in model.namedparams()}))

    def per_param(rule, param):
        calls.append(('per_param', rule.t, None))
    per_param.call_for_each_param = True

    opt.add_hook(pre, timing='pre')
    opt.add_hook(post, timing='post')
    opt.add_hook(per_param, timing='pre')
    opt.update(_lossfun(model), x, t)
    n_params = len(start)
    assert [c[:2] for c in calls] == \
        [('pre', 0)] + [('per_param', 0)] * n_params + [('post', 1)]
    # Step 1 without init_precision: both samples are mu, so the 'pre' hook
    # sees g_hat = the gradient at mu, with mu not yet updated.
    g_at_mu, h_at_mu = per_example_mixed(
        {n: st['mu'] for n, st in start.items()}, x, t)
    want = vogn_step(start, None, [(g_at_mu, h_at_mu)] * 2, 1, HP, POINT)
    for name in start:
        mu_seen, grad_seen = calls[0][2][name]
        numpy.testing.assert_array_equal(mu_seen, start[name]['mu'])
        numpy.testing.assert_allclose(grad_seen, g_at_mu[name], rtol=RTOL,
                                      atol=1e-15, err_msg=name)
        numpy.testing.assert_allclose(calls[-1][2][name], want[name]['mu'],
                                      rtol=RTOL, atol=1e-15, err_msg=name)
    for _ in range(2):
        opt.update(_lossfun(model), x, t)
    assert [c[:2] for c in calls if c[0] != 'per_param'] == [
        ('pre', 0), ('post', 1), ('pre', 1), ('post', 2), ('pre', 2),
        ('post', 3)]


def test_weight_decay_hook_adds_to_g_hat():
    rate = 0.3
    model, opt, x, t = _setup(seed=2)
    opt.add_hook(chainer.optimizer_hooks.WeightDecay(rate))
    start = _start(model)
    seen = []
    opt.update(_recording_lossfun(model, seen), x, t)
    g, h = per_example_mixed(seen[0], x, t)
    decayed = {n: g[n] + rate * start[n]['mu'] for n in g}
    _assert_state(model, vogn_step(start, seen, [(decayed, h)], 1, HP, POINT))


def test_gradient_clipping_hook_rescales_g_hat():
    model, opt, x, t = _setup(seed=4)
    start = _start(model)
    g, h = per_example_mixed({n: st['mu'] for n, st in start.items()}, x, t)
    norm = numpy.sqrt(sum((v ** 2).sum() for v in g.values()))
    threshold = norm / 4
    opt.add_hook(chainer.optimizer_hooks.GradientClipping(threshold))
    opt.update(_lossfun(model), x, t)
    clipped = {n: v * (threshold / norm) for n, v in g.items()}
    _assert_state(model, vogn_step(start, None, [(clipped, h)], 1, HP, POINT))


def test_reports_are_the_mean_over_the_samples():
    K = 3
    model, opt, x, t = _setup(seed=6, init_precision=1.0, num_samples=K)
    classifier = L.Classifier(model)
    seen = []

    def lossfun(a, b):
        seen.append({n: p.array.copy() for n, p in model.namedparams()})
        return classifier(a, b)

    reporter = chainer.Reporter()
    reporter.add_observer('main', classifier)
    observation = {}
    with reporter.scope(observation):
        opt.update(lossfun, x, t)
    assert len(seen) == K
    losses, accuracies = [], []
    for weights in seen:
        net = MixedNet()
        for name, p in net.namedparams():
            p.array = weights[name]
        y = net(x).array
        shifted = y - y.max(axis=1, keepdims=True)
        log_p = shifted - numpy.log(numpy.exp(shifted).sum(axis=1,
                                                           keepdims=True))
        losses.append(-log_p[numpy.arange(len(t)), t].mean())
        accuracies.append((y.argmax(axis=1) == t).mean())
    assert len(set(losses)) == K  # the samples differ
    assert sorted(observation) == ['main/accuracy', 'main/loss']
    numpy.testing.assert_allclose(float(observation['main/loss']),
                                  numpy.mean(losses), rtol=RTOL)
    numpy.testing.assert_allclose(float(observation['main/accuracy']),
                                  numpy.mean(accuracies), rtol=RTOL)
    numpy.testing.assert_allclose(opt.last_loss, numpy.mean(losses),
                                  rtol=RTOL)


def test_update_without_a_reporter_still_records_the_loss():
    model, opt, x, t = _setup(seed=6, init_precision=1.0, num_samples=2)
    classifier = L.Classifier(model)
    opt.update(classifier, x, t)
    assert numpy.isfinite(opt.last_loss)


# Bad input

def test_unsupported_link_is_named():
    class Net(chainer.Chain):
        def __init__(self):
            super(Net, self).__init__()
            with self.init_scope():
                self.embed = L.EmbedID(10, 4)
                self.fc = L.Linear(4, 2)

    with pytest.raises(ValueError, match=r'/embed \(EmbedID\)'):
        chainer_vogn.VOGN(10).setup(Net())


def test_parameter_used_by_unsupported_function_is_named():
    class MatmulLinear(L.Linear):
        def forward(self, x):
            return F.matmul(x, self.W, transb=True)

    model = MatmulLinear(3, 2, nobias=True)
    opt = chainer_vogn.VOGN(10).setup(model)
    x = numpy.ones((2, 3), numpy.float32)
    with pytest.raises(ValueError, match='/W got a gradient but no'):
        opt.update(lambda a: F.sum(model(a)), x)


def test_non_scalar_loss_is_refused():
    model, opt, x, t = _setup()
    with pytest.raises(ValueError, match='scalar'):
        opt.update(lambda a, b: F.softmax_cross_entropy(model(a), b,
                                                        reduce='no'), x, t)


def test_nan_loss_leaves_the_last_good_mean():
    model, opt, x, t = _setup(init_precision=1.0)
    _train(opt, model, _batches(), 2)
    before = {n: p.array.copy() for n, p in model.namedparams()}
    state = {n: p.update_rule.state['s'].copy()
             for n, p in model.namedparams()}
    bad = x.copy()
    bad[0, 0, 0, 0] = numpy.nan
    with pytest.raises(FloatingPointError, match='VOGN step 3'):
        opt.update(lambda a, b: F.softmax_cross_entropy(model(a), b), bad, t)
    assert opt.t == 2
    for name, p in model.namedparams():
        numpy.testing.assert_array_equal(p.array, before[name])
        numpy.testing.assert_array_equal(p.update_rule.state['s'],
                                         state[name])


def test_failing_lossfun_leaves_the_mean():
    """The loss fails at a weight sample: the parameters hold mu again."""
    model, opt, x, t = _setup(init_precision=1.0)
    before = {n: p.array.copy() for n, p in model.namedparams()}
    seen = []

    def lossfun(a, b):
        seen.append(model.fc.W.array.copy())
        raise RuntimeError('out of memory')

    with pytest.raises(RuntimeError, match='out of memory'):
        opt.update(lossfun, x, t)
    assert not numpy.array_equal(seen[0], before['/fc/W'])
    for name, p in model.namedparams():
        assert p.array.tobytes() == before[name].tobytes(), name


@pytest.mark.parametrize('kwargs, name', [
    (dict(dataset_size=0), 'dataset_size'),
    (dict(dataset_size=-5), 'dataset_size'),
    (dict(dataset_size=10, prior_precision=-1), 'prior_precision'),
    (dict(dataset_size=10, init_precision=-1e-3), 'init_precision'),
    (dict(dataset_size=10, damping=-1), 'damping'),
    (dict(dataset_size=10, beta1=1.0), 'beta1'),
    (dict(dataset_size=10, beta2=-0.1), 'beta2'),
    (dict(dataset_size=10, tau=0), 'tau'),
    (dict(dataset_size=10, num_samples=0), 'num_samples'),
])
def test_bad_hyperparameters_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        chainer_vogn.VOGN(**kwargs)


def test_update_without_lossfun_is_refused():
    model, opt, _, _ = _setup()
    with pytest.raises(TypeError, match='lossfun'):
        opt.update()


# The derived default of tau

class _Widths(chainer.Chain):
    """Fan-ins 2*3*3 = 18 (conv), 20 (fc1), 7 (fc2); BatchNorm excluded."""

    def __init__(self):
        super(_Widths, self).__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(2, 4, 3)
            self.bn = L.BatchNormalization(4)
            self.fc1 = L.Linear(20, 7)
            self.fc2 = L.Linear(7, 3)


@pytest.mark.parametrize('kwargs, tau, prior', [
    # both derived: prior = 3/4 of F / 3 = 5, then
    # tau = min(1, N_eff gamma / (F / 3 - prior))
    (dict(dataset_size=100), 0.1 / (20 / 3 - 5), 5.0),
    (dict(dataset_size=400, aug_factor=2.0, damping=2e-3),
     1.6 / (20 / 3 - 5), 5.0),
    (dict(dataset_size=100000), 1.0, 5.0),  # large: Bayesian
    # prior given: tau = min(1, N_eff gamma / (F / 3 - prior))
    (dict(dataset_size=100, prior_precision=1.0), 0.1 / (20 / 3 - 1), 1.0),
    (dict(dataset_size=100, prior_precision=7.0), 1.0, 7.0),
    # tau given: the prior is still F / 4, whatever the data set's size
    (dict(dataset_size=300, tau=0.5), 0.5, 5.0),
    (dict(dataset_size=300, tau=0.5, prior_precision=3.0), 0.5, 3.0),
])
def test_tau_and_prior_are_derived_from_data_damping_and_the_widest_unit(
        kwargs, tau, prior):
    """F = 20 here: the widest unit is fc1."""
    opt = chainer_vogn.VOGN(**kwargs).setup(_Widths())
    assert opt.tau == pytest.approx(tau, rel=1e-12)
    assert opt.prior_precision == pytest.approx(prior, rel=1e-12)


@pytest.mark.parametrize('n', [100, 3000, 100000])
def test_derived_values_keep_flat_directions_within_the_noise_budget(n):
    """With s = 0, the widest unit's input noise F sigma^2 is the budget (3)
    when tau is tempered, and below it when tau = 1; the prior's share of
    the precision of such a weight is 3/4 while tempered, and the prior is
    N(0, 4 / F) whatever n is."""
    opt = chainer_vogn.VOGN(n).setup(_Widths())
    delta_t = opt.tau * opt.prior_precision / n
    sigma2 = opt.tau / (n * (0 + delta_t + opt.damping))  # the spec, s = 0
    noise = 20 * sigma2
    if opt.tau < 1:
        assert noise == pytest.approx(3.0, rel=1e-5)
        assert delta_t / (delta_t + opt.damping) == pytest.approx(0.75)
    else:
        assert noise < 3.0
    assert 1 / opt.prior_precision == pytest.approx(4 / 20)


def test_given_values_are_kept():
    opt = chainer_vogn.VOGN(100, tau=0.7, prior_precision=2.0).setup(
        _Widths())
    assert (opt.tau, opt.prior_precision) == (0.7, 2.0)


def test_tau_of_lazy_links_is_derived_at_the_first_update():
    model = L.Classifier(L.Linear(None, 3))
    opt = chainer_vogn.VOGN(50).setup(model)
    assert opt.tau is None and opt.prior_precision is None
    x = numpy.random.RandomState(0).randn(4, 30).astype(numpy.float32)
    opt.update(model, x, numpy.array([0, 1, 2, 0], numpy.int32))
    assert opt.tau == pytest.approx(50 * 1e-3 / (30 / 3 - 30 / 4))


def test_tau_cannot_be_derived_without_damping():
    with pytest.raises(ValueError, match='tau cannot be derived'):
        chainer_vogn.VOGN(50, damping=0).setup(_Widths())
