"""Independent reference computations for the optimizer tests.

Nothing here uses chainer_vogn's hook or update code: per-example gradients
come from giving every example its OWN copy of each parameter (so the gradient
of the mean loss with respect to copy i is exactly example i's share a_i, with
BatchNormalization coupling included), and the VOGN step is the spec's
formulas written out in float64 NumPy.
"""
import numpy

import chainer_vogn  # NOQA
import chainer
import chainer.functions as F
import chainer.links as L


class MixedNet(chainer.Chain):
    """Convolution (stride 2, pad 1) -> BatchNormalization -> ReLU -> Linear."""

    def __init__(self, in_channels=2, channels=3, n_classes=4, size=6, seed=0):
        super(MixedNet, self).__init__()
        rng = numpy.random.RandomState(seed)
        out = (size + 2 - 3) // 2 + 1
        with self.init_scope():
            self.conv = L.Convolution2D(
                in_channels, channels, 3, stride=2, pad=1,
                initialW=rng.randn(channels, in_channels, 3, 3) * 0.5,
                initial_bias=rng.randn(channels) * 0.1)
            self.bn = L.BatchNormalization(channels)
            self.fc = L.Linear(channels * out * out, n_classes,
                               initialW=rng.randn(n_classes,
                                                  channels * out * out) * 0.3,
                               initial_bias=rng.randn(n_classes) * 0.1)
        self.bn.gamma.array[:] = 1 + 0.2 * rng.randn(channels)
        self.bn.beta.array[:] = 0.1 * rng.randn(channels)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))))


def per_example_mixed(weights, x, t, eps=2e-5):
    """(g, h) of MixedNet's mean softmax cross-entropy at ``weights``.

    ``weights`` maps '/conv/W', '/conv/b', '/bn/gamma', '/bn/beta', '/fc/W',
    '/fc/b' to arrays.  Every example gets its own copy of every parameter;
    the batch statistics of BatchNormalization are computed from the whole
    batch, as in training mode.
    """
    B = len(x)
    copies = {name: [chainer.Variable(value.copy()) for _ in range(B)]
              for name, value in weights.items()}
    conv = F.concat([
        F.convolution_2d(x[i:i + 1], copies['/conv/W'][i],
                         copies['/conv/b'][i], stride=2, pad=1)
        for i in range(B)], axis=0)
    mean = F.mean(conv, axis=(0, 2, 3), keepdims=True)
    centred = conv - F.broadcast_to(mean, conv.shape)
    var = F.mean(centred * centred, axis=(0, 2, 3), keepdims=True)
    x_hat = centred / F.broadcast_to(F.sqrt(var + eps), conv.shape)
    gamma = F.stack(copies['/bn/gamma'])[:, :, None, None]
    beta = F.stack(copies['/bn/beta'])[:, :, None, None]
    h = F.relu(x_hat * F.broadcast_to(gamma, conv.shape)
               + F.broadcast_to(beta, conv.shape))
    h = h.reshape(B, -1)
    y = F.concat([F.linear(h[i:i + 1], copies['/fc/W'][i], copies['/fc/b'][i])
                  for i in range(B)], axis=0)
    F.softmax_cross_entropy(y, t).backward()
    g, sq = {}, {}
    for name, vs in copies.items():
        shares = numpy.stack([v.grad for v in vs])
        g[name] = shares.sum(axis=0)
        sq[name] = B * (shares ** 2).sum(axis=0)
    return g, sq


def vogn_step(state, samples, stats, t, hp, point_estimates=()):
    """The spec's steps 3-8 in float64, given each sample's (g_k, h_k).

    ``state`` maps name -> dict(mu, m, s) (s None when unset); returns the
    new state.  ``stats`` is a list (one entry per sample) of (g, h) dicts.
    """
    tau = hp['tau']
    n_eff = hp.get('aug_factor', 1.0) * hp['dataset_size']
    new = {}
    for name, st in state.items():
        delta_t = 0.0 if name in point_estimates else \
            tau * hp['prior_precision'] / n_eff
        g_hat = numpy.mean([g[name] for g, _ in stats], axis=0)
        h_hat = numpy.mean([h[name] for _, h in stats], axis=0)
        mu = st['mu']
        g = g_hat + delta_t * mu
        m = hp['beta1'] * st['m'] + (1 - hp['beta1']) * g
        s = h_hat if st['s'] is None else \
            hp['beta2'] * st['s'] + (1 - hp['beta2']) * h_hat
        m_hat = m / (1 - hp['beta1'] ** t) if hp.get('bias_correction', True) \
            else m
        new[name] = dict(
            mu=mu - hp['lr'] * m_hat / (s + delta_t + hp['damping']),
            m=m, s=s)
    return new


def sigma(state, hp, point_estimates=()):
    """Spec step 1: sigma of every parameter from its s."""
    n_eff = hp.get('aug_factor', 1.0) * hp['dataset_size']
    delta_t = hp['tau'] * hp['prior_precision'] / n_eff
    return {name: numpy.zeros_like(st['mu']) if name in point_estimates else
            numpy.sqrt(hp['tau'] / (n_eff * (st['s'] + delta_t
                                              + hp['damping'])))
            for name, st in state.items()}
