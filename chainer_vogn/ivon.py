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

from chainer_vogn.variational import SampledGradientMethod

_default_hyperparam = optimizer.Hyperparameter()
_default_hyperparam.dataset_size = None
_default_hyperparam.lr = 0.1
_default_hyperparam.beta1 = 0.9
_default_hyperparam.beta2 = 0.99999
_default_hyperparam.hess_init = 1.0
_default_hyperparam.weight_decay = 1e-4
_default_hyperparam.clip_radius = float('inf')
_default_hyperparam.rescale_lr = True
_default_hyperparam.debias = True


def check_hyperparameters(hp):
    """Raise ValueError naming the first hyperparameter out of its range."""
    def need(ok, name, rule):
        if not ok:
            raise ValueError('IVON: {} = {!r} is invalid: it must be {}'.format(
                name, getattr(hp, name), rule))

    need(hp.dataset_size is not None and hp.dataset_size > 0,
         'dataset_size', 'the (positive) effective sample size, usually the '
         'number of training examples')
    need(hp.lr > 0, 'lr', '> 0')
    need(0 <= hp.beta1 < 1, 'beta1', 'in [0, 1)')
    need(0 <= hp.beta2 <= 1, 'beta2', 'in [0, 1]')
    need(hp.hess_init > 0, 'hess_init', '> 0')
    need(hp.weight_decay >= 0, 'weight_decay', '>= 0')
    need(hp.clip_radius > 0, 'clip_radius', '> 0 (inf: no clipping)')


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
        if hp.clip_radius < float('inf'):
            step.clip(-hp.clip_radius, hp.clip_radius, out=step)
        mu -= c.lr * step

    def update_core_gpu(self, param):
        hp = self.hyperparam
        c = self._update_constants()
        _update_kernel()(
            param.grad, self.curvature, c.lr, hp.beta1, c.rate1, hp.beta2,
            c.rate2, c.correction, hp.weight_decay, hp.clip_radius,
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
        lr (float): step size of the mean (times hess_init + weight_decay
            with ``rescale_lr``).
        beta1, beta2 (float): weights of the old momentum and of the old
            Hessian estimate.
        hess_init (float): h at the start.
        weight_decay (float): delta, the prior precision per example.
        clip_radius (float): bound of every element of the preconditioned
            step (inf: no clipping).
        rescale_lr (bool): multiply lr by hess_init + weight_decay.
        debias (bool): divide the momentum by 1 - beta1^t.
        num_samples (int): Monte Carlo weight samples per step.
        seed (int): seeds eps, drawn from a generator of (seed, sample_id,
            step), so a run is reproducible and resumable from t alone.

    Call ``update(lossfun, *args)`` as for :class:`~chainer_vogn.VOGN`:
    ``lossfun`` returns the minibatch MEAN loss and is called once per
    sample while the parameters hold the sampled weights; optimizer hooks
    run once per step, 'pre' hooks seeing g_hat in ``param.grad``.
    """

    algorithm = 'IVON'
    stability_advice = 'Lower lr, raise hess_init or check the data.'

    def __init__(self, dataset_size, lr=_default_hyperparam.lr,
                 beta1=_default_hyperparam.beta1,
                 beta2=_default_hyperparam.beta2,
                 hess_init=_default_hyperparam.hess_init,
                 weight_decay=_default_hyperparam.weight_decay,
                 clip_radius=_default_hyperparam.clip_radius,
                 rescale_lr=_default_hyperparam.rescale_lr,
                 debias=_default_hyperparam.debias,
                 num_samples=1, seed=0):
        super(IVON, self).__init__(num_samples, seed)
        hp = self.hyperparam
        hp.dataset_size = dataset_size
        hp.lr = lr
        hp.beta1 = beta1
        hp.beta2 = beta2
        hp.hess_init = hess_init
        hp.weight_decay = weight_decay
        hp.clip_radius = clip_radius
        hp.rescale_lr = rescale_lr
        hp.debias = debias
        check_hyperparameters(hp)

    dataset_size = optimizer.HyperparameterProxy('dataset_size')
    lr = optimizer.HyperparameterProxy('lr')
    beta1 = optimizer.HyperparameterProxy('beta1')
    beta2 = optimizer.HyperparameterProxy('beta2')
    hess_init = optimizer.HyperparameterProxy('hess_init')
    weight_decay = optimizer.HyperparameterProxy('weight_decay')
    clip_radius = optimizer.HyperparameterProxy('clip_radius')
    rescale_lr = optimizer.HyperparameterProxy('rescale_lr')
    debias = optimizer.HyperparameterProxy('debias')

    def create_update_rule(self):
        return IVONRule(self.hyperparam)

    def _backward(self, loss, named, eps):
        """Backward pass; this sample's h is g * eps / sigma (Price)."""
        loss.backward()
        return {name: param.grad * eps[name] / param.update_rule.sigma(param)
                for name, param in named if param.grad is not None}
