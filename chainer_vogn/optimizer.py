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
from chainer_vogn.posterior_optimizer import Hyperparameter
from chainer_vogn.posterior_optimizer import default_hyperparam
from chainer_vogn.variational import SampledGradientMethod

#: VOGN's hyperparameters (docs/algorithm.md), declared once: the optimizer,
#: train.py's options and their checks read them from here.
HYPERPARAMETERS = (
    Hyperparameter('lr', 1e-3, float, lambda v: v > 0, '> 0',
                   'step size alpha of the mean'),
    Hyperparameter('beta1', 0.9, float, lambda v: 0 <= v < 1, 'in [0, 1)',
                   'momentum of the mean\'s gradient: weight on the old '
                   'value'),
    Hyperparameter('beta2', 0.999, float, lambda v: 0 <= v < 1, 'in [0, 1)',
                   'moving average of the precision: weight on the old '
                   'value'),
    # None: derived, see derive_defaults.
    Hyperparameter('prior_precision', None, float,
                   lambda v: v is None or v >= 0, 'None (derived) or >= 0',
                   'precision delta of the isotropic Gaussian prior (1 / '
                   'prior variance) (default: derived from the widest unit: '
                   'N(0, 4 / fan-in), see docs/tuning.md)'),
    Hyperparameter('tau', None, float, lambda v: v is None or v > 0,
                   'None (derived) or > 0',
                   'KL weight (temperature) tau (default: derived from the '
                   'training set size, the damping and the widest unit, see '
                   'docs/tuning.md)'),
    Hyperparameter('damping', 1e-3, float, lambda v: v >= 0, '>= 0',
                   'damping gamma added to the precision'),
    Hyperparameter('init_precision', None, float,
                   lambda v: v is None or v >= 0, 'None or >= 0',
                   'initial precision s0 (default: none: the first step runs '
                   'at the mean and sets s to its curvature)'),
    Hyperparameter('aug_factor', 1.0, float, lambda v: v > 0, '> 0',
                   'data augmentation factor rho: N_eff = rho * N'),
    Hyperparameter('bias_correction', True, bool,
                   lambda v: v in (True, False), 'True or False',
                   'the bias correction of the moving averages'),
    Hyperparameter('tau_warmup_steps', 0, int, lambda v: v >= 0, '>= 0',
                   'steps over which tau rises from --tau-init to --tau (0: '
                   'no warm-up)'),
    # Its range depends on tau_warmup_steps: VOGN.check_hyperparameters.
    Hyperparameter('tau_init', 0.1, float, lambda v: True,
                   '> 0 with a warm-up', 'tau at the first step of a warm-up'),
)

_default_hyperparam = default_hyperparam(HYPERPARAMETERS)

#: Links whose parameters the curvature hook handles.
SUPPORTED_LINKS = (L.Linear, L.Convolution2D, L.BatchNormalization)
#: Links whose parameters are point estimates (no noise, no prior).
POINT_ESTIMATE_LINKS = (L.BatchNormalization,)


#: How much noise the weights the data leaves undetermined may add to a
#: unit's input, relative to the signal's own variance (see derive_defaults).
NOISE_BUDGET = 3.0
#: The share of that budget the derived prior holds; the damping holds the
#: rest (see derive_defaults).
PRIOR_SHARE = 0.75


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

    * delta (None): the prior holds PRIOR_SHARE of that bound,
      delta = PRIOR_SHARE F / NOISE_BUDGET = F / 4: a proper prior N(0, 4 / F)
      on every weight, twice the LeCun initialisation's std of the widest
      unit, whatever the data set's size.
    * tau (None): the largest tau <= 1 that keeps the bound,
      tau = min(1, N_eff gamma / (F / NOISE_BUDGET - delta)), 1 when the
      prior alone keeps it; with delta derived, min(1, 12 N_eff gamma / F).

    Data sets that are large next to the model get the Bayesian tau = 1.
    Small ones get a tempered posterior whose prior still pulls the mean
    like a weight decay of tau delta / N_eff = 3 gamma, strong enough that
    the mean does not learn wrong labels by heart (docs/tuning.md has the
    measurements).
    """
    n_eff = hp.aug_factor * hp.dataset_size
    need = widest_fan_in(link) / NOISE_BUDGET
    delta = hp.prior_precision
    if delta is None:
        delta = PRIOR_SHARE * need
    tau = hp.tau
    if tau is None:
        if need <= delta:
            tau = 1.0
        elif hp.damping <= 0:
            raise ValueError(
                'VOGN: tau cannot be derived with damping = {!r}: pass tau '
                '(1 is the Bayesian posterior) or a damping > 0'.format(
                    hp.damping))
        else:
            tau = min(1.0, n_eff * hp.damping / (need - delta))
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
        num_samples (int): K, Monte Carlo weight samples per step.
        seed (int): seeds eps, drawn from a generator of (seed, sample_id,
            step), so a run is reproducible and resumable from t alone.
        **hyperparams: lr, beta1, beta2, prior_precision, tau, damping,
            init_precision, aug_factor, bias_correction, tau_warmup_steps,
            tau_init, as in ``docs/algorithm.md`` (:data:`HYPERPARAMETERS`
            has their defaults and ranges).

    ``update(lossfun, *args)`` and the optimizer hooks work as in
    :class:`~chainer_vogn.variational.SampledGradientMethod`: 'pre' hooks
    see g_hat, the averaged gradient of spec step 3.  See
    ``docs/algorithm.md``.
    """

    hyperparameters = HYPERPARAMETERS
    label = 'VOGN'
    derived_help = ('lr from the data shards, tau from the training set '
                    'size, the damping and the widest unit, the prior from '
                    'the widest unit; see docs/tuning.md')
    stability_advice = ('Lower lr (train.py --lr), raise damping (--damping) '
                        'or check the data.')

    @classmethod
    def check_hyperparameters(cls, hp):
        """The declared ranges, and tau_init > 0 for a warm-up."""
        super(VOGN, cls).check_hyperparameters(hp)
        if hp.tau_warmup_steps > 0 and not hp.tau_init > 0:
            raise cls.invalid(hp, 'tau_init', cls.hyperparameter(
                'tau_init').rule)

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

    def derived(self):
        """lr (scaled with the data shards by :class:`DistributedVOGN` when
        not given), tau and the prior precision as used
        (:func:`derive_defaults`)."""
        self._prepare()
        return collections.OrderedDict((name, getattr(self, name)) for name
                                       in ('lr', 'tau', 'prior_precision'))

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
