"""The VOGN optimizer (Variational Online Gauss-Newton) for Chainer.

VOGN learns a diagonal Gaussian posterior N(mu, sigma^2) over the weights.
Each step draws weights w = mu + sigma * eps, computes the minibatch gradient
and the mean squared per-example gradient at w in one backward pass, and
updates the mean mu, the momentum m and the precision estimate s.  The exact
update is fixed in ``docs/algorithm.md``; the symbols below follow it.

The model's parameters hold mu outside :meth:`VOGN.update`.  Parameters of
BatchNormalization links are point estimates: no noise and no prior, but the
same m, s, mu update.
"""
import collections
import math

import chainer
from chainer.backends import cuda
import chainer.links as L
from chainer import optimizer

from chainer_vogn.curvature import SquaredGradientHook
from chainer_vogn.variational import SampledGradientMethod

_default_hyperparam = optimizer.Hyperparameter()
_default_hyperparam.dataset_size = None
_default_hyperparam.lr = 1e-3
_default_hyperparam.beta1 = 0.9
_default_hyperparam.beta2 = 0.999
_default_hyperparam.prior_precision = None  # derived: see derive_defaults
_default_hyperparam.tau = None  # derived: see derive_defaults
_default_hyperparam.damping = 1e-3
_default_hyperparam.init_precision = None
_default_hyperparam.aug_factor = 1.0
_default_hyperparam.bias_correction = True
_default_hyperparam.tau_warmup_steps = 0
_default_hyperparam.tau_init = 0.1

#: Links whose parameters the curvature hook handles.
SUPPORTED_LINKS = (L.Linear, L.Convolution2D, L.BatchNormalization)
#: Links whose parameters are point estimates (no noise, no prior).
POINT_ESTIMATE_LINKS = (L.BatchNormalization,)


#: How much noise the weights the data leaves undetermined may add to a
#: unit's input, relative to the signal's own variance (see derive_defaults).
NOISE_BUDGET = 3.0
#: The prior's pull on the mean, delta_t = tau delta / N_eff, when the prior
#: precision is derived: a weight decay of this size (see derive_defaults).
PRIOR_PULL = 1e-4


def widest_fan_in(link):
    """The most inputs one unit has among the weights VOGN perturbs
    (in_channels x kh x kw for a convolution, in_size for a Linear; the
    vectors of biases and BatchNormalization have no fan-in)."""
    return max((param.array[0].size
                for param in link.params(include_uninit=False)
                if param.array.ndim >= 2), default=1)


def derive_defaults(hp, link):
    """(tau, prior_precision) for ``link``, each derived where it is None.

    Where the data says nothing about a weight (s near 0) its posterior
    variance is sigma^2 = 1 / (N_eff gamma / tau + delta): only the damping
    gamma and the prior delta hold it.  A unit with F such inputs of unit
    variance then receives F sigma^2 of noise, which must stay within
    NOISE_BUDGET times its signal's variance for the widest unit (F =
    :func:`widest_fan_in`), or the samples drown what the mean learnt:

        N_eff gamma / tau + delta >= F / NOISE_BUDGET.

    * delta (None): the prior pulls the mean like a weight decay of
      PRIOR_PULL, tau delta / N_eff = PRIOR_PULL, so delta = PRIOR_PULL
      N_eff / tau; with both derived, tau = min(1, NOISE_BUDGET N_eff
      (gamma + PRIOR_PULL) / F).
    * tau (None, delta given): the largest tau <= 1 with the bound above,
      tau = min(1, N_eff gamma / (F / NOISE_BUDGET - delta)).

    Data sets that are large next to the model keep the Bayesian tau = 1;
    small ones get a tempered posterior, without which VOGN's samples are
    noise (docs/tuning.md has the measurements).
    """
    n_eff = hp.aug_factor * hp.dataset_size
    need = widest_fan_in(link) / NOISE_BUDGET
    tau, delta = hp.tau, hp.prior_precision
    if tau is None:
        if hp.damping <= 0:
            raise ValueError(
                'VOGN: tau cannot be derived with damping = {!r}: pass tau '
                '(1 is the Bayesian posterior) or a damping > 0'.format(
                    hp.damping))
        if delta is None:
            tau = min(1.0, n_eff * (hp.damping + PRIOR_PULL) / need)
        elif need <= delta:
            tau = 1.0
        else:
            tau = min(1.0, n_eff * hp.damping / (need - delta))
    if delta is None:
        delta = PRIOR_PULL * n_eff / tau
    return tau, delta


def current_tau(hp, t):
    """The KL weight of step t (1-based), following the linear warm-up.

    The warm-up starts at ``tau_init`` at step 1 and reaches ``tau`` at step
    ``tau_warmup_steps + 1``, where it stays.
    """
    if hp.tau_warmup_steps <= 0:
        return hp.tau
    frac = min(t - 1, hp.tau_warmup_steps) / hp.tau_warmup_steps
    return hp.tau_init + (hp.tau - hp.tau_init) * frac


#: The constants of step t that follow tau: ``scale`` = tau_t / N_eff (the
#: numerator of sigma^2) and ``delta_t`` = tau_t delta / N_eff (the prior term).
StepConstants = collections.namedtuple('StepConstants', ['scale', 'delta_t'])

#: What update_core needs besides the arrays: ``delta_t`` (0 for point
#: estimates), ``bias_fix`` = 1 - beta1^t (1 without bias correction) and
#: ``s_unset`` (this step sets s := h_hat).
UpdateConstants = collections.namedtuple(
    'UpdateConstants', ['delta_t', 'bias_fix', 's_unset'])


def step_constants(hp, t, point_estimate=False):
    """The :class:`StepConstants` of step t; delta_t = 0 for point estimates."""
    tau = current_tau(hp, t)
    n_eff = hp.aug_factor * hp.dataset_size
    delta_t = 0.0 if point_estimate else tau * hp.prior_precision / n_eff
    return StepConstants(tau / n_eff, delta_t)


def check_hyperparameters(hp):
    """Raise ValueError naming the first hyperparameter out of its range."""
    def need(ok, name, rule):
        if not ok:
            raise ValueError('VOGN: {} = {!r} is invalid: it must be {}'.format(
                name, getattr(hp, name), rule))

    need(hp.dataset_size is not None and hp.dataset_size > 0,
         'dataset_size', 'the (positive) number of training examples')
    need(hp.lr > 0, 'lr', '> 0')
    need(0 <= hp.beta1 < 1, 'beta1', 'in [0, 1)')
    need(0 <= hp.beta2 < 1, 'beta2', 'in [0, 1)')
    need(hp.prior_precision is None or hp.prior_precision >= 0,
         'prior_precision', 'None (derived) or >= 0')
    need(hp.tau is None or hp.tau > 0, 'tau', 'None (derived) or > 0')
    need(hp.damping >= 0, 'damping', '>= 0')
    need(hp.init_precision is None or hp.init_precision >= 0,
         'init_precision', 'None or >= 0')
    need(hp.aug_factor > 0, 'aug_factor', '> 0')
    need(hp.tau_warmup_steps >= 0, 'tau_warmup_steps', '>= 0')
    need(hp.tau_warmup_steps == 0 or hp.tau_init > 0, 'tau_init', '> 0')


class VOGNRule(optimizer.UpdateRule):
    """Update rule of VOGN for one parameter (spec steps 1 and 4-8).

    The optimizer sets ``param.grad`` to g_hat and :attr:`curvature` to h_hat
    before calling ``param.update()``.  State: ``m`` (momentum) and ``s``
    (Gauss-Newton precision estimate); s is "unset" before the first step
    when ``init_precision`` is None.
    """

    def __init__(self, parent_hyperparam=None, point_estimate=False):
        super(VOGNRule, self).__init__(
            parent_hyperparam or _default_hyperparam)
        self.point_estimate = point_estimate
        self.curvature = None

    def init_state(self, param):
        with chainer.using_device(param.device):
            self.state['m'] = param.device.xp.zeros_like(param.array)
            self.state['s'] = self._initial_s(param)

    def _initial_s(self, param):
        return param.device.xp.full_like(
            param.array, self.hyperparam.init_precision or 0)

    def s_unset(self, t):
        """True when s holds no estimate as step t starts: at step 1 without
        ``init_precision`` (that step samples at mu and sets s := h_hat)."""
        return t == 1 and self.hyperparam.init_precision is None

    def sigma(self, param, t=None):
        """Posterior std for step t (default: the next step), spec step 1.

        Zero for point estimates.  Before the first update, s is its initial
        value.  This is the one place the formula for sigma is written.
        """
        t = self.t + 1 if t is None else t
        xp = param.device.xp
        if self.point_estimate:
            return xp.zeros_like(param.array)
        s = self._initial_s(param) if self.state is None else self.state['s']
        scale, delta_t = step_constants(self.hyperparam, t)
        return xp.sqrt(scale / (s + delta_t + self.hyperparam.damping))

    def sample(self, param, eps):
        """The weight sample w = mu + sigma * eps for the next step (step 2)."""
        mu = param.array
        if self.point_estimate or eps is None or self.s_unset(self.t + 1):
            return mu
        return mu + eps * self.sigma(param)

    def _update_constants(self):
        """The :class:`UpdateConstants` of step ``self.t``.

        ``UpdateRule.update`` has advanced t to the step being applied.
        """
        hp = self.hyperparam
        _, delta_t = step_constants(hp, self.t, self.point_estimate)
        bias_fix = 1.0 - math.pow(hp.beta1, self.t) \
            if hp.bias_correction else 1.0
        return UpdateConstants(delta_t, bias_fix, self.s_unset(self.t))

    def update_core_cpu(self, param):
        hp = self.hyperparam
        g_hat, h_hat = param.grad, self.curvature
        m, s, mu = self.state['m'], self.state['s'], param.array
        c = self._update_constants()
        g = g_hat + c.delta_t * mu
        m *= hp.beta1
        m += (1 - hp.beta1) * g
        if c.s_unset:
            s[...] = h_hat
        else:
            s *= hp.beta2
            s += (1 - hp.beta2) * h_hat
        mu -= hp.lr * (m / c.bias_fix) / (s + c.delta_t + hp.damping)

    def update_core_gpu(self, param):
        hp = self.hyperparam
        c = self._update_constants()
        _update_kernel()(
            param.grad, self.curvature, hp.lr, hp.beta1, hp.beta2, c.delta_t,
            hp.damping, c.bias_fix, c.s_unset,
            param.array, self.state['m'], self.state['s'])


@cuda.memoize()
def _update_kernel():
    return cuda.elementwise(
        'T g_hat, T h_hat, T lr, T beta1, T beta2, T delta_t, T damping, '
        'T bias_fix, bool s_unset',
        'T mu, T m, T s',
        '''T g = g_hat + delta_t * mu;
           m = beta1 * m + (1 - beta1) * g;
           s = s_unset ? h_hat : beta2 * s + (1 - beta2) * h_hat;
           mu -= lr * (m / bias_fix) / (s + delta_t + damping);''',
        'vogn_update')


class VOGN(SampledGradientMethod):
    """Variational Online Gauss-Newton.

    Args:
        dataset_size (int): N, the number of training examples (whole set).
        lr, beta1, beta2, prior_precision, tau, damping, init_precision,
        aug_factor, bias_correction, tau_warmup_steps, tau_init: as in
            ``docs/algorithm.md``.
        num_samples (int): K, Monte Carlo weight samples per step.
        seed (int): seeds eps, drawn from a generator of (seed, sample_id,
            step), so a run is reproducible and resumable from t alone.

    Call ``update(lossfun, *args)`` with a ``lossfun`` that returns the
    minibatch MEAN of per-example losses; it is called K times per step
    while the parameters hold the sampled weights.  What it reports with
    ``chainer.report`` (e.g. ``main/loss`` of ``L.Classifier``) is reported
    once per step as the mean over the K samples; :attr:`last_loss` is that
    mean of the loss.

    Optimizer hooks (``add_hook``) run once per step, as for Chainer's
    gradient methods: 'pre' hooks see g_hat, the averaged gradient of
    spec step 3, in ``param.grad`` and may change it (WeightDecay,
    GradientClipping, Lasso); 'post' hooks run after the update, when the
    parameters hold the new mu.  h_hat is not theirs to change.  See
    ``docs/algorithm.md``.
    """

    algorithm = 'VOGN'
    stability_advice = 'Lower lr, raise damping or check the data.'

    def __init__(self, dataset_size, lr=_default_hyperparam.lr,
                 beta1=_default_hyperparam.beta1,
                 beta2=_default_hyperparam.beta2,
                 prior_precision=_default_hyperparam.prior_precision,
                 tau=_default_hyperparam.tau,
                 damping=_default_hyperparam.damping,
                 init_precision=_default_hyperparam.init_precision,
                 num_samples=1,
                 aug_factor=_default_hyperparam.aug_factor,
                 bias_correction=_default_hyperparam.bias_correction,
                 tau_warmup_steps=_default_hyperparam.tau_warmup_steps,
                 tau_init=_default_hyperparam.tau_init, seed=0):
        super(VOGN, self).__init__(num_samples, seed)
        hp = self.hyperparam
        hp.dataset_size = dataset_size
        hp.lr = lr
        hp.beta1 = beta1
        hp.beta2 = beta2
        hp.prior_precision = prior_precision
        hp.tau = tau
        hp.damping = damping
        hp.init_precision = init_precision
        hp.aug_factor = aug_factor
        hp.bias_correction = bias_correction
        hp.tau_warmup_steps = tau_warmup_steps
        hp.tau_init = tau_init
        check_hyperparameters(hp)

    dataset_size = optimizer.HyperparameterProxy('dataset_size')
    lr = optimizer.HyperparameterProxy('lr')
    beta1 = optimizer.HyperparameterProxy('beta1')
    beta2 = optimizer.HyperparameterProxy('beta2')
    prior_precision = optimizer.HyperparameterProxy('prior_precision')
    tau = optimizer.HyperparameterProxy('tau')
    damping = optimizer.HyperparameterProxy('damping')
    init_precision = optimizer.HyperparameterProxy('init_precision')
    aug_factor = optimizer.HyperparameterProxy('aug_factor')
    bias_correction = optimizer.HyperparameterProxy('bias_correction')
    tau_warmup_steps = optimizer.HyperparameterProxy('tau_warmup_steps')
    tau_init = optimizer.HyperparameterProxy('tau_init')

    def setup(self, link):
        """Attach to ``link``; every parameter must belong to a supported link."""
        point_estimates = set()
        for path, sub in link.namedlinks():
            own = {name[1:]: param for name, param
                   in sub.namedparams(include_uninit=True)
                   if name.count('/') == 1}
            if not own:
                continue
            if not isinstance(sub, SUPPORTED_LINKS):
                raise ValueError(
                    'VOGN supports only the parameters of {}; link {} ({}) '
                    'has parameters {}. Build the model from those links '
                    'or train it with another optimizer.'.format(
                        ', '.join(c.__name__ for c in SUPPORTED_LINKS),
                        path or '/', type(sub).__name__,
                        sorted(own)))
            if isinstance(sub, POINT_ESTIMATE_LINKS):
                point_estimates.update(id(p) for p in own.values())
        super(VOGN, self).setup(link)
        for param in link.params(include_uninit=True):
            param.update_rule.point_estimate = id(param) in point_estimates
        self._prepare()
        return self

    def _prepare(self):
        """Derive tau and the prior precision (:func:`derive_defaults`)
        where none was given, as soon as every parameter has its shape."""
        hp = self.hyperparam
        if (hp.tau is None or hp.prior_precision is None) and all(
                p.array is not None for p in self.target.params()):
            hp.tau, hp.prior_precision = derive_defaults(hp, self.target)

    def create_update_rule(self):
        return VOGNRule(self.hyperparam)

    def _backward(self, loss, named, eps):
        """Backward pass with the per-example squared gradients (spec step
        2): this sample's h is the hook's."""
        hook = SquaredGradientHook(named)
        with hook:
            loss.backward()
        for name, param in named:
            if param.grad is not None and name not in hook.squared:
                raise ValueError(
                    'parameter {} got a gradient but no per-example squared '
                    'gradient: it is used by a function other than '
                    'linear, convolution_2d or batch_normalization, which '
                    'VOGN does not support'.format(name))
        return hook.squared
