"""The learned posterior N(mu, sigma^2) as one npz file, usable without its
optimizer.

Layout of the file: ``mu/<param name>`` and ``sigma/<param name>`` for every
parameter, ``persistent/<name>`` for every persistent value (BatchNormalization
running statistics), and ``meta`` (a JSON string: hyperparameters, step).
Point weights (Adam, SGD) are stored the same way with sigma = 0, so
evaluation reads every run alike.
"""
import contextlib
import json
import os

import numpy

import chainer
from chainer import backend

from chainer_vogn.files import write_npz
from chainer_vogn.posterior_optimizer import PosteriorOptimizer


def _host(array):
    return backend.CpuDevice().send(array)


def from_model(model, optimizer=None, meta=None):
    """The posterior a model and its optimizer hold now, on the host.

    mu is the model's parameters; sigma comes from ``optimizer`` when it
    learns a posterior (a :class:`~chainer_vogn.posterior_optimizer.
    PosteriorOptimizer`) and is zero otherwise (point weights).
    """
    std = {}
    if isinstance(optimizer, PosteriorOptimizer):
        std = optimizer.posterior_std()
    mu, sigma = {}, {}
    for name, param in model.namedparams():
        if param.array is None:
            raise ValueError('parameter {} is not initialised; run one '
                             'forward pass first'.format(name))
        mu[name] = _host(param.array)
        sigma[name] = (_host(std[name]) if name in std
                       else numpy.zeros_like(mu[name]))
    persistent = {name: _host(value)
                  for name, value in _named_persistent(model)}
    info = dict(meta or {})
    if optimizer is not None:
        info.setdefault('step', int(optimizer.t))
    return Posterior(mu, sigma, persistent, info)


def save_posterior(path, model, optimizer=None, meta=None):
    """Save mu (the model's parameters) and sigma (from an optimizer that
    learns a posterior), as :func:`from_model` reads them."""
    post = from_model(model, optimizer, meta)
    arrays = {}
    for name in post.mu:
        arrays['mu' + name] = post.mu[name]
        arrays['sigma' + name] = post.sigma[name]
    for name, value in post.persistent.items():
        arrays['persistent' + name] = value
    arrays['meta'] = numpy.array(json.dumps(post.meta))
    write_npz(path, arrays)


class Posterior(object):
    """A loaded posterior: ``mu``, ``sigma`` and ``persistent`` dicts, ``meta``."""

    def __init__(self, mu, sigma, persistent, meta):
        self.mu, self.sigma = mu, sigma
        self.persistent, self.meta = persistent, meta

    @property
    def is_point_estimate(self):
        return all(not numpy.any(s) for s in self.sigma.values())

    def _check_fits(self, model):
        params = dict(model.namedparams())
        missing = sorted(set(params) - set(self.mu))
        extra = sorted(set(self.mu) - set(params))
        wrong = sorted(name for name, p in params.items()
                       if name in self.mu and p.array is not None
                       and p.array.shape != self.mu[name].shape)
        if missing or extra or wrong:
            raise ValueError(
                'the posterior does not fit this model: missing {}, '
                'unexpected {}, wrong shape {}; was it trained with the same '
                '--arch and dataset?'.format(missing, extra, wrong))
        return params

    def _values(self, model, rng=None):
        """({name: array} of mu (rng None) or of one sample mu + sigma * eps,
        {name: array} of the persistent values), on the model's devices."""
        params = self._check_fits(model)
        weights = {}
        for name, param in params.items():
            value = self.mu[name]
            if rng is not None:
                value = value + self.sigma[name] * rng.standard_normal(
                    value.shape).astype(value.dtype)
            if param.array is None:
                param.initialize(value.shape)
            weights[name] = param.device.send(value.astype(param.dtype))
        persistent = {
            name: backend.get_device_from_array(old).send(
                self.persistent[name].astype(old.dtype))
            for name, _, _, old in _persistent_slots(model)
            if name in self.persistent}
        return weights, persistent

    def load_into(self, model):
        """Put mu and the persistent values into ``model``, to stay."""
        _put(model, *self._values(model))

    def sampled(self, model, rng=None):
        """:func:`sampled` with mu (rng None) or one sample mu + sigma * eps
        of this posterior, and its persistent values, in ``model``."""
        return sampled(model, *self._values(model, rng))


@contextlib.contextmanager
def sampled(link, weights, persistent=None):
    """Run the body with ``weights`` ({parameter name: array}) in the
    parameters of ``link`` and ``persistent`` ({name: array}) in its
    persistent values; afterwards each holds its own array again (mu),
    also when the body raises.

    This is the one way weights are put into a model for a while: the
    optimizer's step, the validation during training and the predictive go
    through it, so that no model is left holding a weight sample, which a
    later step or save would take for the mean.  Names missing from
    ``weights`` or ``persistent`` keep their arrays.
    """
    persistent = persistent or {}
    kept = [(param, param.array) for param in link.params()]
    slots = [(owner, attr, value) for name, owner, attr, value in
             _persistent_slots(link) if name in persistent]
    try:
        _put(link, weights, persistent)
        yield
    finally:
        for param, array in kept:
            param.array = array
        for owner, attr, value in slots:
            setattr(owner, attr, value)


def _put(link, weights, persistent):
    """Put ``weights`` into the parameters and ``persistent`` into the
    persistent values of ``link``, by name."""
    params = dict(link.namedparams())
    for name, value in weights.items():
        params[name].array = value
    for name, owner, attr, _ in _persistent_slots(link):
        if name in persistent:
            setattr(owner, attr, persistent[name])


def _persistent_slots(model):
    """(name, link, attribute, array) of every array-valued persistent."""
    for path, link in model.namedlinks():
        prefix = '' if path == '/' else path
        for attr in sorted(link._persistent):
            value = getattr(link, attr)
            if isinstance(value, chainer.get_array_types()):
                yield prefix + '/' + attr, link, attr, value


def _named_persistent(model):
    return [(name, value) for name, _, _, value in _persistent_slots(model)]


def load_posterior(path):
    """Read a file written by :func:`save_posterior`."""
    if not os.path.exists(path):
        raise FileNotFoundError('no posterior file at {}'.format(path))
    with numpy.load(path) as f:
        mu, sigma, persistent = {}, {}, {}
        for key in f.files:
            for prefix, table in (('mu/', mu), ('sigma/', sigma),
                                  ('persistent/', persistent)):
                if key.startswith(prefix):
                    table[key[len(prefix) - 1:]] = f[key]
        meta = json.loads(str(f['meta'])) if 'meta' in f.files else {}
    if set(mu) != set(sigma):
        raise ValueError('{} is damaged: mu and sigma name different '
                         'parameters'.format(path))
    return Posterior(mu, sigma, persistent, meta)
