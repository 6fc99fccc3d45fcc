"""The paper code's VOGN settings, translated into this project's names.

The paper's own code (team-approx-bayes/dl-with-bayes on torchsso) writes the
same update in other conventions: a heavy-ball momentum without (1 - beta1),
an EMA of the curvature whose decay weights the NEW value, a prior variance,
a KL weighting with its own warm-up.  ``PaperVOGN`` below is that update
written out in float64 from its description (docs/algorithm.md, "Translating
the paper code's values"); ``VOGNRule`` with the translated values must follow
it on the same stream of (g_hat, h_hat).
"""
import math
import os

import numpy
import pytest
import yaml

import chainer_vogn
import chainer.links as L

from conftest import REPO

#: The paper code's CIFAR-10 VOGN settings (its configs/cifar10/*.json):
#: values, not code.
PAPER = {
    'lenet5': dict(epochs=211, batch_size=32, gpus=4, num_mc_groups=4,
                   lr=1e-4, momentum=0.9, num_mc_samples=6,
                   val_num_mc_samples=10, kl_weighting=1,
                   warmup_kl_weighting_init=0.1,
                   warmup_kl_weighting_steps=11719, prior_variance=1e-2,
                   damping=1e-3, ema_decay=0.999, dataset_size_scale=1,
                   augment=False),
    'alexnet': dict(epochs=161, batch_size=32, gpus=8, num_mc_groups=8,
                    lr=1e-4, momentum=0.9, num_mc_samples=3,
                    val_num_mc_samples=10, kl_weighting=1,
                    warmup_kl_weighting_init=0.5,
                    warmup_kl_weighting_steps=1954, prior_variance=2,
                    damping=1e-3, ema_decay=0.999, dataset_size_scale=10,
                    augment=False),
    'resnet18': dict(epochs=161, batch_size=32, gpus=8, num_mc_groups=8,
                     lr=1e-4, momentum=0.9, num_mc_samples=5,
                     val_num_mc_samples=20, kl_weighting=1,
                     warmup_kl_weighting_init=None,
                     warmup_kl_weighting_steps=None, prior_variance=0.02,
                     damping=1e-3, ema_decay=0.999, dataset_size_scale=10,
                     augment=True),
}


class PaperVOGN(object):
    """The paper code's diagonal VOGN step on one parameter, in float64.

    Heavy-ball momentum on the raw gradient plus the L2 term of the prior,
    an EMA of h whose decay weights the new value (the first step takes h
    itself), the L2 term in the preconditioner as an EMA of the same kind,
    and the KL weighting moved on after each step.
    """

    def __init__(self, mu, dataset_size, lr, momentum, ema_decay, damping,
                 prior_variance, kl_weighting, warmup_init=None,
                 warmup_steps=None):
        self.mu = numpy.array(mu, numpy.float64)
        self.buf = numpy.zeros_like(self.mu)
        self.ema = None
        self.l2_ema = None
        self.n, self.lr, self.momentum = dataset_size, lr, momentum
        self.decay, self.damping = ema_decay, damping
        self.prior_variance = prior_variance
        self.target_kl, self.warmup_init = kl_weighting, warmup_init
        self.warmup_steps = warmup_steps
        self.kl = kl_weighting if warmup_steps is None else warmup_init
        self.steps_done = 0

    def step(self, g, h):
        l2 = self.kl / self.n / self.prior_variance
        self.buf = self.momentum * self.buf + (g + l2 * self.mu)
        if self.ema is None:
            self.ema, self.l2_ema = h.copy(), l2
        else:
            self.ema = self.decay * h + (1 - self.decay) * self.ema
            self.l2_ema = self.decay * l2 + (1 - self.decay) * self.l2_ema
        self.mu = self.mu - self.lr * self.buf / (
            self.ema + self.damping + self.l2_ema)
        self.steps_done += 1
        if self.warmup_steps is not None and \
                self.steps_done <= self.warmup_steps:
            self.kl = self.warmup_init + (
                self.target_kl - self.warmup_init) * (
                    self.steps_done / self.warmup_steps)

    def std(self):
        """Posterior std the next step samples with."""
        return math.sqrt(self.kl / self.n) / numpy.sqrt(
            self.ema + self.damping + self.l2_ema)


def translate(paper, dataset_size):
    """This project's VOGN arguments for the paper code's values (the table
    in docs/algorithm.md)."""
    beta1 = paper['momentum']
    kwargs = dict(dataset_size=dataset_size, lr=paper['lr'] / (1 - beta1),
                  beta1=beta1, beta2=1 - paper['ema_decay'],
                  bias_correction=False,
                  prior_precision=1 / paper['prior_variance'],
                  tau=paper['kl_weighting'], damping=paper['damping'],
                  aug_factor=paper['dataset_size_scale'])
    if paper['warmup_kl_weighting_steps']:
        kwargs.update(tau_init=paper['warmup_kl_weighting_init'],
                      tau_warmup_steps=paper['warmup_kl_weighting_steps'])
    return kwargs


def _stream(rng, shape, steps):
    """Gradients that shrink and curvatures that drift, like training's."""
    for t in range(steps):
        scale = 0.05 / math.sqrt(1 + t / 50)
        g = rng.randn(*shape) * scale
        h = (rng.randn(*shape) ** 2 + rng.rand(*shape)) * scale ** 2
        yield g, h


@pytest.mark.parametrize('arch', sorted(PAPER))
def test_translated_rule_follows_the_paper_rule(arch):
    """A few hundred steps of one stream, warm-up included (shortened to
    fit: the rule per step is what is compared)."""
    paper = dict(PAPER[arch])
    steps = 400
    if paper['warmup_kl_weighting_steps']:
        paper['warmup_kl_weighting_steps'] = 300
    n_train = 50000
    rng = numpy.random.RandomState(7)
    link = L.Linear(4, 3)
    for p in link.params():
        p.array = rng.randn(*p.shape) * 0.1
    chainer_vogn.VOGN(**translate(paper, n_train)).setup(link)
    start = {name: p.array.copy() for name, p in link.namedparams()}
    refs = {}
    for name, param in link.namedparams():
        refs[name] = PaperVOGN(
            param.array, n_train * paper['dataset_size_scale'], paper['lr'],
            paper['momentum'], paper['ema_decay'], paper['damping'],
            paper['prior_variance'], paper['kl_weighting'],
            paper['warmup_kl_weighting_init'],
            paper['warmup_kl_weighting_steps'])
    streams = {name: _stream(numpy.random.RandomState(i), p.shape, steps)
               for i, (name, p) in enumerate(sorted(link.namedparams()))}
    for t in range(steps):
        for name, param in sorted(link.namedparams()):
            g, h = next(streams[name])
            refs[name].step(g, h)
            param.grad = g.copy()
            param.update_rule.curvature = h.copy()
            param.update()
            param.update_rule.curvature = None
    for name, param in link.namedparams():
        ref = refs[name]
        state = param.update_rule.state
        numpy.testing.assert_allclose(param.array, ref.mu, rtol=1e-5,
                                      err_msg=name + ' mu')
        numpy.testing.assert_allclose(state['s'], ref.ema, rtol=1e-5,
                                      err_msg=name + ' s')
        numpy.testing.assert_allclose(state['m'],
                                      (1 - paper['momentum']) * ref.buf,
                                      rtol=1e-5, err_msg=name + ' m')
        numpy.testing.assert_allclose(param.update_rule.sigma(param),
                                      ref.std(), rtol=1e-5,
                                      err_msg=name + ' sigma')
        # The stream moved the mean well away from its start, so agreeing
        # is not agreeing on a standstill.
        assert numpy.abs(ref.mu - start[name]).max() > 1e-2


def test_untranslated_values_do_not_follow_the_paper_rule():
    """The old mistranslation (beta2 0.999, lr 1e-4 with an EMA momentum)
    is far off: the comparison above can tell the difference."""
    paper = dict(PAPER['lenet5'], warmup_kl_weighting_steps=150)
    wrong = dict(translate(paper, 50000), beta2=paper['ema_decay'],
                 lr=paper['lr'], bias_correction=True)
    rng = numpy.random.RandomState(3)
    link = L.Linear(4, 3, nobias=True)
    link.W.array = rng.randn(3, 4) * 0.1
    chainer_vogn.VOGN(**wrong).setup(link)
    ref = PaperVOGN(link.W.array, 50000, paper['lr'], paper['momentum'],
                    paper['ema_decay'], paper['damping'],
                    paper['prior_variance'], paper['kl_weighting'],
                    paper['warmup_kl_weighting_init'], 150)
    for g, h in _stream(numpy.random.RandomState(0), (3, 4), 200):
        ref.step(g, h)
        link.W.grad = g.copy()
        link.W.update_rule.curvature = h.copy()
        link.W.update()
    assert not numpy.allclose(link.W.array, ref.mu, rtol=1e-3)


def _config(arch):
    path = os.path.join(REPO, 'configs', 'cifar10_{}_vogn.yaml'.format(arch))
    with open(path) as f:
        return {k.replace('-', '_'): v for k, v in yaml.safe_load(f).items()}


@pytest.mark.parametrize('arch', sorted(PAPER))
def test_vogn_configs_hold_the_translated_values(arch):
    paper, config = PAPER[arch], _config(arch)
    want = translate(paper, None)
    for key in ('lr', 'beta1', 'beta2', 'prior_precision', 'tau', 'damping',
                'aug_factor', 'tau_init', 'tau_warmup_steps'):
        if key in want:
            assert config[key] == pytest.approx(want[key], rel=1e-12), key
    assert config['bias_correction'] is False
    assert config['mc'] == paper['num_mc_samples']
    assert config['val_samples'] == paper['val_num_mc_samples']
    assert config['epochs'] == paper['epochs']
    assert bool(config.get('augment', False)) == paper['augment']


@pytest.mark.parametrize('arch', sorted(PAPER))
def test_run_as_line_gives_the_papers_images_and_samples_per_step(arch):
    """The header's mpiexec line: P processes with --samples S and the
    config's per-process batch give the paper's images per step
    (gpus x batch) and sample groups per step (num_mc_groups)."""
    paper = PAPER[arch]
    path = os.path.join(REPO, 'configs', 'cifar10_{}_vogn.yaml'.format(arch))
    with open(path) as f:
        header = [line for line in f if 'run as:' in line]
    assert len(header) == 1, 'one "run as:" line in ' + path
    words = header[0].split()
    processes = int(words[words.index('-n') + 1])
    samples = int(words[words.index('--samples') + 1])
    batch = _config(arch)['batchsize']
    if '--batchsize' in words:
        batch = int(words[words.index('--batchsize') + 1])
    data_shards = processes // samples
    assert processes % samples == 0
    assert data_shards * batch == paper['gpus'] * paper['batch_size']
    assert samples == paper['num_mc_groups']
