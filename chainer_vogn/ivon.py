"""IVON (Improved Variational Online Newton; Shen et al., ICML 2024) for Chainer.

IVON learns a diagonal Gaussian posterior N(mu, sigma^2) with
sigma^2 = 1 / (lambda (h + delta)), lambda the effective sample size and
delta the weight decay.  Its curvature estimate h needs no per-example
gradients: at a sample w = mu + sigma * eps the reparameterised gradient
gives h_hat = g_hat * eps / sigma, whose expectation is the diagonal of the
Hessian (Price's theorem), so a step costs about as much as Adam's.  The
update of h carries a correction term that keeps h + delta positive.  The
exact step, the reference implementation's defaults and how its options map
onto these are in ``docs/algorithm.md`` ("IVON").

The model's parameters hold mu outside :meth:`IVON.update`.  Every parameter
is sampled and decayed, BatchNormalization's included, as in the reference.
"""
import collections
import math

import chainer
from chainer.backends import cuda
from chainer import optimizer

from chainer_vogn.posterior_optimizer import Hyperparameter
from chainer_vogn.posterior_optimizer import default_hyperparam
from chainer_vogn.variational import SampledGradientMethod

#: IVON's hyperparameters with the reference code's defaults
#: (docs/algorithm.md, "IVON"), declared once: the optimizer, train.py's
#: options and their checks read them from here.
HYPERPARAMETERS = (
    Hyperparameter('lr', 0.1, float, lambda v: v > 0, '> 0',
                   'step size of the mean (times hess_init + weight_decay '
                   'with rescale_lr)'),
    Hyperparameter('beta1', 0.9, float, lambda v: 0 <= v < 1, 'in [0, 1)',
                   'momentum of the gradient: weight on the old value'),
    Hyperparameter('beta2', 0.99999, float, lambda v: 0 <= v <= 1,
                   'in [0, 1]',
                   'moving average of the Hessian estimate: weight on the '
                   'old value'),
    Hyperparameter('hess_init', 1.0, float, lambda v: v > 0, '> 0',
                   'initial Hessian estimate h0'),
    Hyperparameter('weight_decay', 1e-4, float, lambda v: v >= 0, '>= 0',
                   'prior precision per example delta: sigma^2 = 1 / (N (h + '
                   'delta))'),
    Hyperparameter('clip_radius', None, float,
                   lambda v: v is None or v > 0,
                   'None (no clipping) or > 0',
                   'bound of every element of the preconditioned step '
                   '(default: none, no clipping; the reference code\'s inf)'),
    Hyperparameter('rescale_lr', True, bool, lambda v: v in (True, False),
                   'True or False',
                   'the rescaling of lr by hess_init + weight_decay'),
    Hyperparameter('debias', True, bool, lambda v: v in (True, False),
                   'True or False', 'the bias correction of the momentum'),
)

_default_hyperparam = default_hyperparam(HYPERPARAMETERS)


#: The scalars of one update: ``lr`` (rescaled by hess_init + weight_decay
#: with ``rescale_lr``), ``bias_fix`` = 1 - beta1^t (1 without ``debias``),
#: ``rate1`` = 1 - beta1, ``rate2`` = 1 - beta2 and ``correction`` =
#: (1 - beta2)^2 / 2, all in double precision: 1 - beta2 taken in float32
#: would be 0.14% off for beta2 = 0.99999.
UpdateConstants = collections.namedtuple(
    'UpdateConstants', ['lr', 'bias_fix', 'rate1', 'rate2', 'correction'])


class IVONRule(optimizer.UpdateRule):
    """Update rule of IVON for one parameter.

    The optimizer sets ``param.grad`` to g_hat and :attr:`curvature` to
    h_hat before calling ``param.update()``.  State: ``m`` (momentum, zeros
    at first) and ``h`` (Hessian estimate, ``hess_init`` at first).
    """

    def __init__(self, parent_hyperparam=None):
        super(IVONRule, self).__init__(
            parent_hyperparam or _default_hyperparam)
        self.curvature = None

    def init_state(self, param):
        xp = param.device.xp
        with chainer.using_device(param.device):
            self.state['m'] = xp.zeros_like(param.array)
            self.state['h'] = xp.full_like(param.array,
                                           self.hyperparam.hess_init)

    def sigma(self, param):
        """Posterior std of the next step, 1 / sqrt(lambda (h + delta))."""
        hp = self.hyperparam
        xp = param.device.xp
        h = (xp.full_like(param.array, hp.hess_init) if self.state is None
             else self.state['h'])
        return 1 / xp.sqrt(hp.dataset_size * (h + hp.weight_decay))

    def sample(self, param, eps):
        """The weight sample w = mu + sigma * eps."""
        return param.array + eps * self.sigma(param)

    def _update_constants(self):
        """The :class:`UpdateConstants` of step ``self.t`` (already advanced
        by ``UpdateRule.update``)."""
        hp = self.hyperparam
        lr = hp.lr * (hp.hess_init + hp.weight_decay) if hp.rescale_lr \
            else hp.lr
        bias_fix = 1.0 - math.pow(hp.beta1, self.t) if hp.debias else 1.0
        rate2 = 1.0 - hp.beta2
        return UpdateConstants(lr, bias_fix, 1.0 - hp.beta1, rate2,
                               0.5 * rate2 * rate2)

    def update_core_cpu(self, param):
        hp = self.hyperparam
        c = self._update_constants()
        g_hat, h_hat = param.grad, self.curvature
        m, h, mu = self.state['m'], self.state['h'], param.array
        m *= hp.beta1
        m += c.rate1 * g_hat
        correction = h - h_hat
        correction *= correction
        correction *= c.correction
        correction /= h + hp.weight_decay
        h *= hp.beta2
        h += c.rate2 * h_hat
        h += correction
        step = m / c.bias_fix
        step += hp.weight_decay * mu
        step /= h + hp.weight_decay
        if hp.clip_radius is not None:
            step.clip(-hp.clip_radius, hp.clip_radius, out=step)
        mu -= c.lr * step

    def update_core_gpu(self, param):
        hp = self.hyperparam
        c = self._update_constants()
        _update_kernel()(
            param.grad, self.curvature, c.lr, hp.beta1, c.rate1, hp.beta2,
            c.rate2, c.correction, hp.weight_decay,
            float('inf') if hp.clip_radius is None else hp.clip_radius,
            c.bias_fix, param.array, self.state['m'], self.state['h'])


@cuda.memoize()
def _update_kernel():
    return cuda.elementwise(
        'T g_hat, T h_hat, T lr, T beta1, T rate1, T beta2, T rate2, '
        'T correction, T weight_decay, T clip_radius, T bias_fix',
        'T mu, T m, T h',
        '''m = beta1 * m + rate1 * g_hat;
           T d = h - h_hat;
           h = beta2 * h + rate2 * h_hat
               + correction * d * d / (h + weight_decay);
           T step = (m / bias_fix + weight_decay * mu) / (h + weight_decay);
           mu -= lr * fmin(fmax(step, -clip_radius), clip_radius);''',
        'ivon_update')


class IVON(SampledGradientMethod):
    """Improved Variational Online Newton.

    Args:
        dataset_size (float): lambda, the effective sample size (``ess`` of
            the reference code); usually the number of training examples.
        num_samples (int): Monte Carlo weight samples per step.
        seed (int): seeds eps, drawn from a generator of (seed, sample_id,
            step), so a run is reproducible and resumable from t alone.
        **hyperparams: lr, beta1, beta2, hess_init, weight_decay,
            clip_radius, rescale_lr, debias (:data:`HYPERPARAMETERS` has
            their defaults, ranges and meaning).

    ``update(lossfun, *args)`` and the optimizer hooks work as for
    :class:`~chainer_vogn.VOGN` (see
    :class:`~chainer_vogn.variational.SampledGradientMethod`).
    """

    hyperparameters = HYPERPARAMETERS
    label = 'IVON'
    derived_help = 'lr from the data shards'
    stability_advice = ('Lower lr (train.py --lr), raise hess_init '
                        '(--hess-init) or check the data.')

    def create_update_rule(self):
        return IVONRule(self.hyperparam)

    def derived(self):
        """lr, scaled with the data shards by :class:`DistributedIVON` when
        not given."""
        return collections.OrderedDict([('lr', self.lr)])

    def _backward(self, loss, named, eps):
        """Backward pass; this sample's h is g * eps / sigma (Price)."""
        loss.backward()
        return {name: param.grad * eps[name] / param.update_rule.sigma(param)
                for name, param in named if param.grad is not None}
