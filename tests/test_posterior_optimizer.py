"""The contract of optimizers that learn a posterior, and a stand-in that
implements it: registered in the registry alone, it trains, evaluates and
resumes through train.py and evaluate.py like VOGN."""
import collections
import json
import os

import numpy
import pytest

import chainer_vogn
import chainer

from chainer_vogn import commands
from chainer_vogn import distributed
from chainer_vogn import posterior
from chainer_vogn import registry
from chainer_vogn import run_options
from chainer_vogn.posterior_optimizer import Hyperparameter
from chainer_vogn.posterior_optimizer import HyperparameterError
from chainer_vogn.posterior_optimizer import PosteriorOptimizer


class _SGDRule(chainer.optimizer.UpdateRule):

    def update_core_cpu(self, param):
        param.array -= self.hyperparam.lr * param.grad


class FixedSigmaSGD(PosteriorOptimizer):
    """A posterior N(mu, SIGMA^2) whose mean SGD trains at one weight
    sample per step: about the least an optimizer that learns a posterior
    is.  It takes the distributed form's arguments (one process)."""

    hyperparameters = (Hyperparameter('lr', 0.05, float, lambda v: v > 0,
                                      '> 0', 'step size of the mean'),)
    label = 'Fixed-sigma SGD'
    SIGMA = 0.01

    def __init__(self, comm, dataset_size, num_sample_groups=1,
                 num_samples=1, seed=0, **hyperparams):
        super(FixedSigmaSGD, self).__init__(dataset_size, **hyperparams)
        self.data_comm = comm
        self.seed = seed

    def create_update_rule(self):
        return _SGDRule(self.hyperparam)

    def posterior_std(self):
        return {name: numpy.full_like(p.array, self.SIGMA)
                for name, p in self.target.namedparams()}

    def derived(self):
        return collections.OrderedDict(lr=self.lr)

    def update(self, lossfun=None, *args, **kwds):
        rng = numpy.random.RandomState([self.seed, self.t])
        sample = {name: p.array + self.SIGMA * rng.standard_normal(
            p.shape).astype(p.dtype) for name, p in self.target.namedparams()}
        with posterior.sampled(self.target, sample):
            self.target.cleargrads()
            lossfun(*args, **kwds).backward()
        super(FixedSigmaSGD, self).update()


def test_hyperparameters_are_declared_once():
    """The declaration gives the defaults, the keyword arguments, the
    attributes and the check that names what it rejects."""
    opt = FixedSigmaSGD(None, 10)
    assert (opt.lr, opt.dataset_size) == (0.05, 10)
    assert FixedSigmaSGD(None, 10, lr=0.5).lr == 0.5
    with pytest.raises(HyperparameterError) as error:
        FixedSigmaSGD(None, 10, lr=-1)
    assert error.value.name == 'lr'
    assert str(error.value) == ('Fixed-sigma SGD: lr = -1 is invalid: it '
                                'must be > 0')
    with pytest.raises(HyperparameterError, match='dataset_size'):
        FixedSigmaSGD(None, 0)
    with pytest.raises(TypeError, match=r"no hyperparameters \['beta1'\]"):
        FixedSigmaSGD(None, 10, beta1=0.9)


def test_the_contract_is_abstract():
    class NoStd(PosteriorOptimizer):
        def derived(self):
            return {}

    with pytest.raises(TypeError, match='posterior_std'):
        NoStd(10)


def test_vogn_implements_the_contract():
    assert issubclass(chainer_vogn.DistributedVOGN, PosteriorOptimizer)
    spec = registry.optimizer_spec('vogn')
    assert spec.posterior is chainer_vogn.DistributedVOGN
    assert run_options.HYPERPARAMETER_OPTIONS['tau'] == [
        ('vogn', chainer_vogn.VOGN.hyperparameter('tau'))]
    with pytest.raises(HyperparameterError) as error:
        chainer_vogn.VOGN(10, tau_warmup_steps=5, tau_init=0)
    assert error.value.name == 'tau_init'


def test_options_of_other_optimizers_stay_unset():
    """VOGN's options are None for Adam, IVON's for VOGN, and they do not
    decide a run's results."""
    adam = run_options.RunConfig(optimizer='adam')
    assert adam.beta2 is None and adam.bias_correction is None
    assert {'beta2', 'tau', 'bias_correction'} <= adam.foreign_options()
    vogn = run_options.RunConfig()
    assert (vogn.beta2, vogn.bias_correction) == (0.999, True)
    assert vogn.hess_init is None
    assert vogn.foreign_options() == {'hess_init', 'clip_radius',
                                      'rescale_lr', 'debias'}
    # A shared option takes the run's optimizer's default.
    ivon = run_options.RunConfig(optimizer='ivon')
    assert (ivon.beta2, ivon.hess_init, ivon.weight_decay, ivon.tau) == \
        (0.99999, 1.0, 1e-4, None)
    assert {'tau', 'damping', 'bias_correction'} <= ivon.foreign_options()
    assert not {'beta1', 'beta2', 'hess_init'} & ivon.foreign_options()


@pytest.mark.e2e
def test_a_registered_stand_in_trains_evaluates_and_resumes(
        tmp_path, monkeypatch, capsys):
    """Only the registry learns of the stand-in; train.py records what the
    contract gives (dataset_size, <name>_used, sigma) and evaluate.py
    samples its weights."""
    monkeypatch.setitem(registry.OPTIMIZERS, 'standin', registry.posterior_spec(
        'standin', FixedSigmaSGD, FixedSigmaSGD.hyperparameter('lr').default))
    monkeypatch.setattr(distributed, 'abort_on_uncaught_exception',
                        lambda: None)
    run = str(tmp_path / 'standin')
    train = ['--optimizer', 'standin', '--out', run, '--no-progress',
             '--val-samples', '2', '--snapshot-interval', '1']
    commands.train_main(train + ['--epochs', '1'])
    with open(os.path.join(run, 'config.json')) as f:
        config = json.load(f)
    assert (config['optimizer'], config['lr'], config['lr_used'],
            config['dataset_size']) == ('standin', 0.05, 0.05, 1437)
    assert config['beta1'] is None and config['finished']
    assert 'validation/predictive/nll' in config['final']
    post = chainer_vogn.load_posterior(os.path.join(run, 'model.npz'))
    assert all((s == FixedSigmaSGD.SIGMA).all() for s in post.sigma.values())

    report = str(tmp_path / 'report')
    commands.evaluate_main([run, '--mc-samples', '3', '--out', report])
    with open(os.path.join(report, 'report.json')) as f:
        doc = json.load(f)
    entry, = doc['runs']
    assert entry['optimizer'] == 'Fixed-sigma SGD'
    assert doc['meta']['T'] == {'standin': 3}  # weight samples, not a point
    assert entry['metrics']['accuracy'] > 0.5

    commands.train_main(train + ['--epochs', '2', '--resume'])
    assert 'resuming from epoch 1' in capsys.readouterr().out
    with open(os.path.join(run, 'config.json')) as f:
        assert json.load(f)['final']['epoch'] == 2


@pytest.mark.e2e
def test_an_older_record_of_a_baseline_still_resumes(tmp_path, monkeypatch):
    """Records written before the options of VOGN became None for the
    baselines hold VOGN's defaults for them: an Adam run resumes all the
    same, since they do not decide its results."""
    monkeypatch.setattr(distributed, 'abort_on_uncaught_exception',
                        lambda: None)
    run = str(tmp_path / 'adam')
    train = ['--optimizer', 'adam', '--out', run, '--no-progress',
             '--val-samples', '0']
    commands.train_main(train + ['--epochs', '1'])
    path = os.path.join(run, 'config.json')
    with open(path) as f:
        config = json.load(f)
    config.update(beta1=0.9, beta2=0.999, damping=1e-3, prior_precision=None,
                  bias_correction=True, tau_warmup_steps=0, tau_init=0.1)
    with open(path, 'w') as f:
        json.dump(config, f)
    commands.train_main(train + ['--epochs', '2', '--resume'])
    with open(path) as f:
        assert json.load(f)['final']['epoch'] == 2


@pytest.mark.e2e
def test_a_record_older_than_an_option_resumes_with_its_default(
        tmp_path, monkeypatch):
    """A run recorded before --train-size, --label-noise and --val-split
    existed ran as they do by default: it resumes; a changed one is still
    refused."""
    monkeypatch.setattr(distributed, 'abort_on_uncaught_exception',
                        lambda: None)
    run = str(tmp_path / 'vogn')
    train = ['--out', run, '--no-progress', '--val-samples', '0']
    commands.train_main(train + ['--epochs', '1'])
    path = os.path.join(run, 'config.json')
    with open(path) as f:
        config = json.load(f)
    for name in ('train_size', 'label_noise', 'val_split'):
        del config[name]
    with open(path, 'w') as f:
        json.dump(config, f)
    with pytest.raises(SystemExit):
        commands.train_main(train + ['--epochs', '2', '--resume',
                                     '--label-noise', '0.1'])
    commands.train_main(train + ['--epochs', '2', '--resume'])
    with open(path) as f:
        assert json.load(f)['final']['epoch'] == 2
