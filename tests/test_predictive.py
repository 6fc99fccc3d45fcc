"""Predictive distributions: Monte Carlo averaging against closed forms, the
seed convention, MC dropout, OOD inputs and the errors on bad runs."""
import json
import os
import struct
from unittest import mock

import numpy
import pytest

import chainer_vogn
import chainer
import chainer.links as L
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from chainer_vogn import datasets
from chainer_vogn import evaluation
from chainer_vogn import run_folder
from chainer_vogn import models
from chainer_vogn import ood
from chainer_vogn import posterior
from chainer_vogn import predictive
from chainer_vogn import registry
from chainer_vogn import run_options
from chainer_vogn import run_setup
from chainer_vogn.errors import RunError
from chainer_vogn.posterior_optimizer import PosteriorOptimizer


class FixedStd(PosteriorOptimizer):
    """Stands in for VOGN when saving: a posterior with a chosen sigma."""

    def __init__(self, std):
        super(FixedStd, self).__init__(dataset_size=1)
        self.std = std

    def posterior_std(self):
        return self.std

    def derived(self):
        return {}


def saved(tmp_path, model, std=None):
    """``model``'s weights as mu and ``std`` as sigma, through model.npz."""
    path = str(tmp_path / 'model.npz')
    posterior.save_posterior(path, model, FixedStd(std or {}))
    return chainer_vogn.load_posterior(path)


def mlp(n_classes=4, dropout=0.0, seed=0):
    numpy.random.seed(seed)
    model = L.Classifier(models.MLP(n_classes, hidden=(16, 16),
                                    dropout=dropout))
    with chainer.using_config('train', False):
        model.predictor(numpy.zeros((1, 1, 4, 4), numpy.float32))
    return model


def inputs(n=30, seed=1):
    rng = numpy.random.RandomState(seed)
    return rng.standard_normal((n, 1, 4, 4)).astype(numpy.float32)


def logits_of(model, post, method, inputs, samples, seed=0, batchsize=256):
    """Logits of the given samples: one (len(samples), N_k, C) array per
    input, from predictive.iterate_samples."""
    found = [logits for _, logits in predictive.iterate_samples(
        model, post, method, inputs, samples, seed, batchsize=batchsize)]
    return [numpy.stack(stack) for stack in zip(*found)]


def deterministic_probs(model, x):
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return predictive.softmax(model.predictor(x).array)


def test_methods_and_number_of_samples():
    sampling = {name: registry.optimizer_spec(name).sampling
                for name in ('vogn', 'mcdropout', 'adam', 'sgd')}
    assert sampling == {'vogn': 'weights', 'mcdropout': 'dropout',
                        'adam': 'point', 'sgd': 'point'}
    assert predictive.samples_used('weights', 10) == 10
    assert predictive.samples_used('dropout', 7) == 7
    assert predictive.samples_used('point', 10) == 1
    with pytest.raises(ValueError, match='optimizer'):
        registry.optimizer_spec('rmsprop')


@pytest.mark.parametrize('method', ['weights', 'dropout', 'point'])
def test_fewer_than_one_sample_is_refused(tmp_path, method):
    model = mlp()
    with pytest.raises(ValueError, match='>= 1'):
        predictive.predict(model, saved(tmp_path, model), method,
                           [inputs()], 0)


def test_zero_sigma_predictive_is_the_point_prediction(tmp_path):
    model = mlp()
    x = inputs()
    want = deterministic_probs(model, x)
    fresh = mlp(seed=5)  # other initial weights: the file must replace them
    pred, = predictive.predict(fresh, saved(tmp_path, model), 'weights', [x],
                               5, seed=3)
    assert pred.sample_probs.shape == (5, 30, 4)
    for probs in pred.sample_probs:
        numpy.testing.assert_allclose(probs, want, rtol=1e-6, atol=1e-12)
    numpy.testing.assert_allclose(pred.probs, want, rtol=1e-6, atol=1e-12)
    numpy.testing.assert_allclose(pred.probs.sum(axis=1), 1, rtol=1e-12)

    std = {name: numpy.full(p.shape, 0.3, numpy.float32)
           for name, p in model.namedparams()}
    noisy, = predictive.predict(fresh, saved(tmp_path, model, std),
                                'weights', [x], 5, seed=3)
    assert numpy.abs(noisy.probs - want).max() > 1e-2


def linear_posterior(tmp_path, d=6, c=3):
    rng = numpy.random.RandomState(2)
    link = L.Linear(d, c)
    link.W.array[...] = rng.standard_normal((c, d))
    link.b.array[...] = rng.standard_normal(c)
    std = {'/W': rng.uniform(0.1, 0.5, (c, d)).astype(numpy.float32),
           '/b': rng.uniform(0.1, 0.5, c).astype(numpy.float32)}
    x = rng.standard_normal((4, d)).astype(numpy.float32)
    return link, saved(tmp_path, link, std), x


def test_logit_spread_matches_the_closed_form(tmp_path):
    link, post, x = linear_posterior(tmp_path)
    T = 4000
    logits, = logits_of(link, post, 'weights', [x], range(T))
    mu_w, mu_b = post.mu['/W'], post.mu['/b']
    s_w, s_b = post.sigma['/W'].astype(float), post.sigma['/b']
    # logit_c = sum_j x_j W_cj + b_c with independent Gaussian weights:
    # mean sum_j x_j mu_cj + mu_c, variance sum_j x_j^2 s_cj^2 + s_c^2.
    mean = x @ mu_w.T + mu_b
    var = (x.astype(float) ** 2) @ (s_w ** 2).T + s_b.astype(float) ** 2
    numpy.testing.assert_allclose(logits.mean(axis=0), mean,
                                  atol=float(4 * numpy.sqrt(var.max() / T)))
    numpy.testing.assert_allclose(logits.var(axis=0), var, rtol=0.1)


def test_sample_t_is_drawn_from_seed_and_t_alone(tmp_path):
    link, post, x = linear_posterior(tmp_path)
    seed = 11
    logits, = logits_of(link, post, 'weights', [x], range(4),
                                       seed=seed)
    names = [name for name, _ in link.namedparams()]
    for t in range(4):
        rng = numpy.random.default_rng([seed, t])
        w = {n: post.mu[n] + post.sigma[n] * rng.standard_normal(
            post.mu[n].shape).astype(numpy.float32) for n in names}
        numpy.testing.assert_allclose(logits[t], x @ w['/W'].T + w['/b'],
                                      rtol=1e-5, atol=1e-5)
    # Any subset, in any order: the same samples, to the bit.
    again, = logits_of(link, post, 'weights', [x], [3, 1],
                                      seed=seed)
    numpy.testing.assert_array_equal(again, logits[[3, 1]])
    # Other batches change only the rounding of the matrix products.
    batched, = logits_of(link, post, 'weights', [x], [3, 1],
                                        seed=seed, batchsize=3)
    numpy.testing.assert_allclose(batched, again, rtol=1e-5, atol=1e-6)


def test_mc_dropout_passes_differ_and_their_mean_is_not_the_point(tmp_path):
    model = mlp(dropout=0.5)
    post = saved(tmp_path, model)
    x = inputs()
    point = deterministic_probs(model, x)
    pred, = predictive.predict(model, post, 'dropout', [x], 6, seed=0)
    for a in range(6):
        for b in range(a):
            assert numpy.abs(pred.sample_probs[a] -
                             pred.sample_probs[b]).max() > 1e-3
    assert numpy.abs(pred.probs - point).max() > 1e-2
    # Reproducible from (seed, t), whatever else was sampled before.
    again, = logits_of(model, post, 'dropout', [x], [4])
    numpy.testing.assert_allclose(predictive.softmax(again[0]),
                                  pred.sample_probs[4], rtol=1e-12)
    other, = predictive.predict(model, post, 'dropout', [x], 6, seed=1)
    assert numpy.abs(other.probs - pred.probs).max() > 1e-3


def test_point_runs_make_one_deterministic_pass(tmp_path):
    model = mlp(dropout=0.5)  # an Adam run with dropout: off at test time
    x = inputs()
    pred, = predictive.predict(model, saved(tmp_path, model), 'point', [x],
                               predictive.samples_used('point', 10))
    assert pred.sample_probs.shape == (1, 30, 4)
    numpy.testing.assert_allclose(pred.probs, deterministic_probs(model, x),
                                  rtol=1e-6, atol=1e-12)


class LinearBN(chainer.Chain):

    def __init__(self):
        super(LinearBN, self).__init__()
        with self.init_scope():
            self.fc = L.Linear(3, 4)
            self.bn = L.BatchNormalization(4)

    def __call__(self, x):
        return self.bn(self.fc(x))


@pytest.mark.parametrize('method', ['weights', 'dropout'])
def test_batch_normalization_uses_running_statistics(tmp_path, method):
    numpy.random.seed(0)
    model = LinearBN()
    model.bn.avg_mean[...] = [0.5, -1.0, 2.0, 0.0]
    model.bn.avg_var[...] = [4.0, 0.25, 1.0, 9.0]
    model.bn.gamma.array[...] = [1.0, 2.0, 0.5, 1.5]
    model.bn.beta.array[...] = [0.1, 0.2, 0.3, 0.4]
    post = saved(tmp_path, model)
    x = numpy.random.standard_normal((8, 3)).astype(numpy.float32)
    h = x @ model.fc.W.array.T + model.fc.b.array
    want = (h - model.bn.avg_mean) / numpy.sqrt(model.bn.avg_var +
                                                model.bn.eps)
    want = want * model.bn.gamma.array + model.bn.beta.array
    logits, = logits_of(LinearBN(), post, method, [x],
                                       range(2))
    for sample in logits:
        numpy.testing.assert_allclose(sample, want, rtol=1e-5, atol=1e-5)


def test_parse_ood():
    assert ood.parse_ood('none') is None
    assert ood.parse_ood('svhn') == 'svhn'
    assert ood.parse_ood('holdout:5-9') == 'holdout:5-9'
    with pytest.raises(ValueError, match='imagenet'):
        ood.parse_ood('imagenet')
    with pytest.raises(ValueError, match='bad class list'):
        ood.parse_ood('holdout:9-5')


def run_args(**changes):
    options = dict(optimizer='adam', arch='mlp', dataset='digits',
                   classes='0-4', dropout=0.0)
    options.update(changes)
    return run_options.RunConfig(**options)


def test_holdout_is_the_held_out_test_classes():
    args = run_args()
    _, test, info = run_setup.load_data(args)
    x = ood.load_ood('holdout:5-9', args, info)
    _, full, _ = datasets.get_dataset('digits')
    want = [full[i][0] for i in range(len(full)) if full[i][1] >= 5]
    assert x.shape == (len(want), 1, 8, 8) == (180, 1, 8, 8)
    numpy.testing.assert_array_equal(x, numpy.stack(want))


@pytest.mark.parametrize('spec,classes,message', [
    ('holdout:3-6', '0-4', r'classes \[3, 4\] of digits are in-distribution'),
    ('holdout:5-12', '0-4', 'only classes 0-9'),
    ('holdout:5-9', None, 'trained on every class'),
    ('digits', '0-4', 'use --ood holdout'),
])
def test_bad_holdout_is_reported(spec, classes, message):
    args = run_args(classes=classes)
    info = run_setup.load_data(args)[2]
    with pytest.raises(RunError, match=message):
        ood.load_ood(spec, args, info, 'adam-run')


def test_other_data_set_is_standardised_like_the_run():
    # A 1-channel run on 16x16 images with mean 0.25 and std 2 (on [0, 1]).
    info = {'in_channels': 1, 'image_size': 16, 'mean': [0.25],
            'std': [2.0]}
    x = ood.load_ood('digits', run_args(dataset='mnist'), info)
    digits = load_digits()
    _, raw, _, _ = train_test_split(digits.images, digits.target,
                                    test_size=0.2, stratify=digits.target,
                                    random_state=0)
    want = ((raw[:, None] / 16.0 - 0.25) / 2.0).repeat(2, 2).repeat(2, 3)
    assert x.dtype == numpy.float32 and x.shape == (360, 1, 16, 16)
    numpy.testing.assert_allclose(x, want, atol=1e-6)


def write_mnist(folder, n=3):
    """Tiny MNIST idx files (uint8 images 28x28)."""
    rng = numpy.random.RandomState(0)
    for prefix in ('train', 't10k'):
        for kind, array in (
                ('images-idx3', rng.randint(0, 256, (n, 28, 28))),
                ('labels-idx1', numpy.arange(n))):
            header = struct.pack('>I', 0x0800 + array.ndim)
            header += struct.pack('>' + 'I' * array.ndim, *array.shape)
            with open(os.path.join(folder, '{}-{}-ubyte'.format(
                    prefix, kind)), 'wb') as f:
                f.write(header + array.astype(numpy.uint8).tobytes())


@pytest.mark.parametrize('spec,run,message', [
    ('mnist', dict(in_channels=1, image_size=8),
     'its images are 1x28x28 but run r1 takes 1x8x8'),
    ('digits', dict(in_channels=3, image_size=32),
     'its images are 1x8x8 but run r1 takes 3x32x32'),
])
def test_ood_of_another_shape_is_refused(tmp_path, spec, run, message):
    write_mnist(str(tmp_path))
    info = dict(run, mean=[0.5] * run['in_channels'],
                std=[0.25] * run['in_channels'])
    args = run_args(dataset='cifar10', data_dir=str(tmp_path))
    with pytest.raises(RunError, match=message):
        ood.load_ood(spec, args, info, 'r1')


def make_run(folder, **changes):
    """A run folder as train.py leaves it (untrained weights)."""
    os.makedirs(folder)
    args = run_args(**changes)
    _, _, info = run_setup.load_data(args)
    model = run_setup.build_model(args, info)
    with chainer.using_config('train', False):
        model.predictor(numpy.zeros((1, 1, 8, 8), numpy.float32))
    posterior.save_posterior(os.path.join(folder, 'model.npz'), model)
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        json.dump(dict(vars(args), dataset_info=info), f)
    return folder


def test_run_folder_is_read(tmp_path):
    run = run_folder.Run(make_run(str(tmp_path / 'a')), 'a')
    assert run.method == 'point'
    info = run_setup.load_data(run.args)[2]
    model = run.build_model(info)
    numpy.testing.assert_array_equal(
        model.predictor.layers[2].b.array, run.posterior.mu[
            '/predictor/layers/2/b'])
    # --data-dir replaces the folder the run used.
    assert run_folder.Run(str(tmp_path / 'a'), 'a', 'elsewhere').args \
        .data_dir == 'elsewhere'


@pytest.mark.parametrize('remove', ['model.npz', 'config.json'])
def test_incomplete_run_folder_is_reported(tmp_path, remove):
    folder = make_run(str(tmp_path / 'half'))
    os.remove(os.path.join(folder, remove))
    with pytest.raises(RunError, match='run r: .*half has no ' + remove):
        run_folder.Run(folder, 'r')
    with pytest.raises(RunError, match='no folder'):
        run_folder.Run(str(tmp_path / 'nothing'), 'r')


def test_damaged_model_file_is_reported(tmp_path):
    folder = make_run(str(tmp_path / 'cut'))
    path = os.path.join(folder, 'model.npz')
    with open(path, 'rb') as f:
        head = f.read(300)
    with open(path, 'wb') as f:
        f.write(head)
    with pytest.raises(RunError, match='run r: cannot read'):
        run_folder.Run(folder, 'r')


def test_model_that_does_not_fit_its_config_is_reported(tmp_path):
    folder = make_run(str(tmp_path / 'wrong'))
    with open(os.path.join(folder, 'config.json')) as f:
        config = json.load(f)
    config['classes'] = '0-3'  # 4 outputs; model.npz has 5
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        json.dump(config, f)
    run = run_folder.Run(folder, 'wrong-run')
    info = run_setup.load_data(run.args)[2]
    with pytest.raises(RunError, match='run wrong-run: .*model.npz does not '
                                       'fit the model its config.json'):
        run.build_model(info)


def test_run_names():
    assert evaluation.run_names(['x/vogn', 'y/adam/']) == ['vogn', 'adam']
    assert evaluation.run_names(['a', 'b'], 'one,two') == ['one', 'two']
    with pytest.raises(RunError, match='distinct'):
        evaluation.run_names(['x/result', 'y/result'])
    with pytest.raises(RunError, match='2 runs'):
        evaluation.run_names(['a', 'b'], 'one')


def test_dropout_sample_is_the_same_on_every_input(tmp_path):
    model = mlp(dropout=0.5)
    post = saved(tmp_path, model)
    x, y = inputs(), inputs(seed=2)
    both = logits_of(model, post, 'dropout', [x, y], [2])
    alone = logits_of(model, post, 'dropout', [y], [2])
    numpy.testing.assert_array_equal(both[1], alone[0])


# The caller's model is left as it was

def _bn_model_and_posterior(tmp_path):
    """A model with persistent values (BatchNormalization running
    statistics) and a posterior of another model, with its own mu, sigma
    and running statistics."""
    from bruteforce import MixedNet
    trained = L.Classifier(MixedNet(seed=1))
    trained.predictor.bn.avg_mean[:] = 0.5
    trained.predictor.bn.avg_var[:] = 2.0
    std = {name: numpy.full_like(p.array, 0.1)
           for name, p in trained.namedparams()}
    post = saved(tmp_path, trained, std)
    return L.Classifier(MixedNet(seed=0)), post


def _state_of(model):
    """Copies of every parameter array and persistent value of ``model``."""
    state = {'param' + n: p.array.copy() for n, p in model.namedparams()}
    state.update(('persistent' + name, value.copy())
                 for name, _, _, value in posterior._persistent_slots(model))
    return state


def _assert_bitwise_equal(before, model):
    after = _state_of(model)
    assert sorted(after) == sorted(before)
    for name, value in before.items():
        assert after[name].tobytes() == value.tobytes(), name


@pytest.mark.parametrize('method', ['weights', 'dropout', 'point'])
def test_predict_leaves_the_model_unchanged(tmp_path, method):
    model, post = _bn_model_and_posterior(tmp_path)
    post.meta['optimizer'] = {'weights': 'vogn', 'dropout': 'mcdropout',
                              'point': 'adam'}[method]
    before = _state_of(model)
    x = numpy.random.RandomState(0).randn(5, 2, 6, 6).astype(numpy.float32)
    found = chainer_vogn.predict((post, model), x, num_samples=3)
    assert found.probs.shape == (5, 4)
    _assert_bitwise_equal(before, model)


def test_predict_leaves_the_model_unchanged_when_a_pass_raises(tmp_path):
    """The second sample's forward fails midway (after the model holds the
    sample): the model still gets its own weights back."""
    model, post = _bn_model_and_posterior(tmp_path)
    before = _state_of(model)
    forward = type(model.predictor.fc).forward
    calls = []

    def failing(link, x):
        calls.append(link.W.array.copy())
        if len(calls) == 2:
            raise RuntimeError('out of memory')
        return forward(link, x)

    x = numpy.zeros((2, 2, 6, 6), numpy.float32)
    with mock.patch.object(type(model.predictor.fc), 'forward', failing):
        with pytest.raises(RuntimeError, match='out of memory'):
            chainer_vogn.predict((post, model), x, num_samples=3)
    # The failing pass ran on a sample of the posterior, not on the model's.
    assert not numpy.array_equal(calls[1], before['param/predictor/fc/W'])
    _assert_bitwise_equal(before, model)


def test_sampled_restores_mu_also_on_an_exception():
    model = mlp()
    before = _state_of(model)
    sample = {name: p.array + 1 for name, p in model.namedparams()}
    with pytest.raises(KeyError):
        with posterior.sampled(model, sample):
            for name, p in model.namedparams():
                numpy.testing.assert_array_equal(p.array, sample[name])
            raise KeyError('x')
    _assert_bitwise_equal(before, model)
