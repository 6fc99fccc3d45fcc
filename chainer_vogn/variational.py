"""What VOGN and IVON share: a step at sampled weights, reduced statistics.

Both learn a diagonal Gaussian posterior N(mu, sigma^2) and run each step
the same way: draw K weight samples w = mu + sigma * eps, run the loss and
its backward pass at each (with :func:`chainer_vogn.posterior.sampled`),
average the gradient g_hat and a curvature estimate h_hat over the samples
(and, in a distributed run, over all processes), and let every parameter's
update rule move mu and its state.  They differ only in sigma, in how one
sample's h is computed (VOGN: squared per-example gradients; IVON: the
reparameterised gradient times eps/sigma) and in the rule;
:class:`SampledGradientMethod` holds the rest.
"""
import collections
import contextlib
import math

import numpy

import chainer
from chainer import backend
from chainer.backends import cuda

from chainer_vogn import posterior
from chainer_vogn.posterior_optimizer import PosteriorOptimizer

#: One process's statistics of a step: ``grads`` g_hat and ``curvatures``
#: h_hat ({name: array}), the mean ``loss`` over the K samples and
#: ``reports``, the mean of what lossfun reported ({key: value}).
SampleStatistics = collections.namedtuple(
    'SampleStatistics', ['grads', 'curvatures', 'loss', 'reports'])


class SampledGradientMethod(PosteriorOptimizer):
    """A posterior optimizer whose step evaluates the loss at weight samples.

    Subclasses provide an update rule with ``sigma(param)`` (the posterior
    std for the next step), ``sample(param, eps)`` (the weights to evaluate
    at) and a ``curvature`` attribute that receives h_hat before
    ``param.update()``, and implement :meth:`_backward`.

    Args:
        dataset_size (int): N, the number of training examples (whole set).
        num_samples (int): K, Monte Carlo weight samples per step.
        seed (int): seeds eps, drawn from a generator of (seed, sample_id,
            step, k), so a run is reproducible and resumable from t alone.
        **hyperparams: the subclass's declared hyperparameters.

    Call ``update(lossfun, *args)`` with a ``lossfun`` that returns the
    minibatch MEAN of per-example losses; it is called K times per step
    while the parameters hold the sampled weights.  What it reports with
    ``chainer.report`` (e.g. ``main/loss`` of ``L.Classifier``) is reported
    once per step as the mean over the K samples; :attr:`last_loss` is that
    mean of the loss.

    Optimizer hooks (``add_hook``) run once per step, as for Chainer's
    gradient methods: 'pre' hooks see g_hat in ``param.grad`` and may change
    it (WeightDecay, GradientClipping, Lasso); 'post' hooks run after the
    update, when the parameters hold the new mu.  h_hat is not theirs to
    change.
    """

    #: What to try when a step gives non-finite statistics.
    stability_advice = 'Lower lr (train.py --lr) or check the data.'
    #: Index of this process's Monte Carlo sample group (see distributed).
    sample_id = 0

    def __init__(self, dataset_size, num_samples=1, seed=0, **hyperparams):
        super(SampledGradientMethod, self).__init__(dataset_size,
                                                    **hyperparams)
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError('{}: num_samples = {!r} is invalid: it must '
                             'be an integer >= 1'.format(self.label,
                                                         num_samples))
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.last_loss = None

    def _prepare(self):
        """Called before a step and by :meth:`posterior_std` (VOGN derives
        its defaults here once the parameters have shapes)."""

    def _backward(self, loss, named, eps):
        """Run ``loss.backward()`` and return this sample's curvature
        estimate {name: array} for the parameters that got a gradient."""
        raise NotImplementedError

    def _named_params(self):
        params = sorted(self.target.namedparams(include_uninit=False))
        return [(name, p) for name, p in params if p.update_rule.enabled]

    def _draw_eps(self, named_params, step, k):
        """eps for sample k of ``step``, from a generator of (seed, sample_id,
        step): the same inside a sample group, independent across groups."""
        seq = numpy.random.SeedSequence(
            [self.seed, self.sample_id, step, k])
        eps = {}
        host_rng = device_rng = None
        for name, param in named_params:
            xp = backend.get_array_module(param.array)
            shape, dtype = param.array.shape, param.array.dtype
            if xp is numpy:
                host_rng = host_rng or numpy.random.default_rng(seq)
                eps[name] = host_rng.standard_normal(shape, dtype=dtype)
            else:
                device_rng = device_rng or cuda.cupy.random.RandomState(
                    int(seq.generate_state(1, numpy.uint32)[0]))
                eps[name] = device_rng.standard_normal(shape, dtype=dtype)
        return eps

    def posterior_std(self):
        """sigma of every parameter, {name: array}, for the next step."""
        self._prepare()
        return {name: p.update_rule.sigma(p)
                for name, p in sorted(self.target.namedparams())}

    def reduce_statistics(self, grads, curvatures):
        """Average g_hat and h_hat over processes; one process: nothing to do."""
        return grads, curvatures

    def update(self, lossfun=None, *args, **kwds):
        """One step with ``lossfun(*args, **kwds)``, the minibatch mean loss.

        The order follows ``GradientMethod.update``: gradients, 'pre' hooks,
        t += 1, the update of every parameter, 'post' hooks.
        """
        if lossfun is None:
            raise TypeError(
                '{}.update needs lossfun: it evaluates the loss at sampled '
                'weights itself, so precomputed gradients cannot be '
                'used'.format(self.label))
        if any(p.array is None for p in self.target.params()):
            # Lazily initialised links (L.Linear(None, n)) get their
            # parameters on a first forward pass.
            with chainer.using_config('train', False), \
                    chainer.no_backprop_mode(), _reports_into({}):
                lossfun(*args, **kwds)
        self._prepare()
        named = self._named_params()
        step = self.t + 1
        stats = self._sample_statistics(named, step, lossfun, args, kwds)
        grads, curvatures = self.reduce_statistics(stats.grads,
                                                   stats.curvatures)
        chainer.report(stats.reports)
        self.last_loss = float(stats.loss)
        self._check_finite(step, self.last_loss, grads, curvatures)

        for name, param in named:
            param.grad = grads[name]
        self.reallocate_cleared_grads()
        self.call_hooks('pre')
        self.t += 1
        self._apply_update(named, curvatures)
        self.call_hooks('post')

    def _sample_statistics(self, named, step, lossfun, args, kwds):
        """g_hat and h_hat of this process, as :class:`SampleStatistics`."""
        grads, curvatures, losses, observations = {}, {}, [], []
        for k in range(self.num_samples):
            eps, sample = self._sample(named, step, k)
            with posterior.sampled(self.target, sample):
                self.target.cleargrads()
                observation = {}
                with _reports_into(observation):
                    loss = lossfun(*args, **kwds)
                _check_loss(loss)
                curvature = self._backward(loss, named, eps)
            losses.append(loss.array)
            observations.append(observation)
            self._accumulate(named, curvature, grads, curvatures, k)
        for name in grads:
            grads[name] /= self.num_samples
            curvatures[name] /= self.num_samples
        return SampleStatistics(grads, curvatures,
                                sum(losses) / len(losses),
                                _mean_observation(observations))

    def _sample(self, named, step, k):
        """eps of sample k of ``step`` and the sample w = mu + sigma * eps,
        each as {name: array}."""
        eps = self._draw_eps(named, step, k)
        return eps, {name: param.update_rule.sample(param, eps[name])
                     for name, param in named}

    def _apply_update(self, named, curvatures):
        """Every parameter's rule, with g_hat in param.grad and h_hat."""
        for name, param in named:
            param.update_rule.curvature = curvatures[name]
            param.update()
            param.update_rule.curvature = None

    def _accumulate(self, named, curvature, grads, curvatures, k):
        for name, param in named:
            if param.grad is None:
                raise ValueError(
                    'parameter {} got no gradient from lossfun; {} updates '
                    'every parameter of the model, so disable its update '
                    'rule (param.update_rule.enabled = False) if it is '
                    'unused'.format(name, self.label))
            if k == 0:
                grads[name] = param.grad.copy()
                curvatures[name] = curvature[name]
            else:
                grads[name] += param.grad
                curvatures[name] += curvature[name]

    def _check_finite(self, step, loss, grads, curvatures):
        bad = [name for stats in (grads, curvatures)
               for name, value in sorted(stats.items())
               if not bool(backend.get_array_module(value).isfinite(
                   value).all())]
        if not math.isfinite(loss) or bad:
            raise FloatingPointError(
                '{} step {}: non-finite {} (loss {}); the parameters keep '
                'the last good mean. {}'.format(
                    self.label, step, 'statistics of ' + ', '.join(
                        sorted(set(bad))) if bad else 'loss', loss,
                    self.stability_advice))


@contextlib.contextmanager
def _reports_into(observation):
    """Collect what is reported with ``chainer.report`` into ``observation``
    instead of the current reporter's; without a current reporter nothing
    is reported at all."""
    try:
        reporter = chainer.get_current_reporter()
    except IndexError:
        yield
        return
    with reporter.scope(observation):
        yield


def _mean_observation(observations):
    """The mean of every reported value over the samples that reported it."""
    values = collections.defaultdict(list)
    for observation in observations:
        for key, value in observation.items():
            values[key].append(getattr(value, 'array', value))
    return {key: sum(v) / len(v) for key, v in values.items()}


def _check_loss(loss):
    if not isinstance(loss, chainer.Variable) or loss.shape != ():
        raise ValueError(
            'lossfun must return the minibatch mean of the per-example '
            'losses as a scalar chainer.Variable; it returned {}'.format(
                'shape {}'.format(loss.shape)
                if hasattr(loss, 'shape') else type(loss).__name__))
