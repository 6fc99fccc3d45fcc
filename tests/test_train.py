"""train.py end to end on the bundled digits: options, outputs, resume, failures."""
import glob
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy
import pytest

import chainer_vogn
from chainer_vogn import progress
from chainer_vogn import run_options
from chainer_vogn import run_setup
from chainer_vogn import training
from chainer_vogn.errors import RunError

from conftest import assert_same_posterior
from conftest import bar_draws
from conftest import in_terminal
from conftest import progress_lines
from conftest import wait_for_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, 'train.py')
SMALL = ['--dataset', 'digits', '--arch', 'mlp', '--no-progress']


def _train(args, **kwargs):
    return subprocess.run([sys.executable, TRAIN] + SMALL + args,
                          capture_output=True, text=True, timeout=300,
                          **kwargs)


# Options and configuration files

def test_every_shipped_config_parses():
    paths = sorted(glob.glob(os.path.join(REPO, 'configs', '*.yaml')))
    names = {os.path.basename(p) for p in paths}
    for arch in ('lenet5', 'alexnet', 'resnet18'):
        for opt in ('vogn', 'adam', 'mcdropout'):
            assert 'cifar10_{}_{}.yaml'.format(arch, opt) in names
    for path in paths:
        args = run_options.parse_args(['--config', path])
        assert args.dataset == 'cifar10'
        assert args.optimizer in os.path.basename(path)


def test_command_line_wins_over_config(tmp_path):
    config = tmp_path / 'c.json'
    config.write_text(json.dumps({'optimizer': 'adam', 'lr': 0.5,
                                  'weight-decay': 0.1,
                                  'lr_milestones': '3,6'}))
    args = run_options.parse_args(['--config', str(config), '--lr', '0.25'])
    assert (args.optimizer, args.lr, args.weight_decay,
            args.lr_milestones) == ('adam', 0.25, 0.1, [3, 6])


@pytest.mark.parametrize('content, message', [
    ({'learning_rate': 1}, 'unknown options'),
    ({'optimizer': 'rmsprop'}, 'not one of'),
])
def test_bad_config_is_named(tmp_path, capsys, content, message):
    config = tmp_path / 'c.json'
    config.write_text(json.dumps(content))
    with pytest.raises(SystemExit):
        run_options.parse_args(['--config', str(config)])
    assert message in capsys.readouterr().err


def test_samples_are_for_weight_samplers_only(capsys):
    with pytest.raises(SystemExit):
        run_options.parse_args(['--optimizer', 'adam', '--samples', '2'])
    assert 'applies to vogn or ivon only' in capsys.readouterr().err


# Smoke runs: every optimizer learns and leaves its outputs

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    out = {}
    for opt in ('vogn', 'adam', 'mcdropout', 'sgd'):
        folder = str(root / opt)
        extra = ['--prior-precision', '50'] if opt == 'vogn' else []
        result = _train(['--optimizer', opt, '--epochs', '2', '--out',
                         folder] + extra)
        assert result.returncode == 0, result.stdout + result.stderr
        out[opt] = folder
    return out


@pytest.mark.parametrize('opt', ['vogn', 'adam', 'mcdropout', 'sgd'])
def test_smoke_run_learns_and_writes_outputs(runs, opt):
    folder = runs[opt]
    with open(os.path.join(folder, 'log')) as f:
        log = json.load(f)
    assert [entry['epoch'] for entry in log] == [1, 2]
    # 10 classes: chance is 0.1.
    assert log[-1]['validation/main/accuracy'] > 0.5, log[-1]
    # The Bayesian runs also log their T-sample predictive.
    bayesian = opt in ('vogn', 'mcdropout')
    assert ('validation/predictive/accuracy' in log[-1]) == bayesian
    assert ('validation/predictive/nll' in log[-1]) == bayesian
    if bayesian:
        assert log[-1]['validation/predictive/accuracy'] > 0.5, log[-1]
    with open(os.path.join(folder, 'config.json')) as f:
        config = json.load(f)
    assert config['finished'] and config['optimizer'] == opt
    if opt == 'vogn':  # N gamma / (F / 3 - delta), the MLP's widest F = 256
        assert config['tau'] is None and config['prior_precision'] == 50
        assert config['tau_used'] == pytest.approx(1.437 / (256 / 3 - 50))
        assert config['prior_precision_used'] == 50
        assert config['lr'] is None and config['lr_used'] == 1e-3
    assert (config['processes'], config['sample_groups'],
            config['data_shards']) == (1, 1, 1)
    assert config['versions']['chainer'] == '7.8.1'
    assert config['held_out'] == {'name': 'test', 'size': 360,
                                  'train_size': 1437}
    assert 'n_flipped' not in config['dataset_info']
    post = chainer_vogn.load_posterior(os.path.join(folder, 'model.npz'))
    assert post.meta['arch'] == 'mlp' and post.meta['optimizer'] == opt
    assert post.is_point_estimate == (opt != 'vogn')
    for name in ('loss.png', 'accuracy.png'):
        with open(os.path.join(folder, name), 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert glob.glob(os.path.join(folder, 'snapshot_rank0_epoch2.npz'))


def test_existing_run_is_not_overwritten(runs):
    before = open(os.path.join(runs['adam'], 'model.npz'), 'rb').read()
    result = _train(['--optimizer', 'adam', '--out', runs['adam']])
    assert result.returncode != 0
    assert 'already holds a run' in result.stderr
    assert open(os.path.join(runs['adam'], 'model.npz'), 'rb').read() == \
        before


def test_sample_parallel_run_under_mpiexec(mpiexec, tmp_path):
    cmd = mpiexec(2) + [TRAIN] + SMALL + [
        '--samples', '2', '--epochs', '1', '--out', str(tmp_path),
        '--prior-precision', '50']
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    config = json.load(open(str(tmp_path / 'config.json')))
    assert (config['processes'], config['sample_groups'],
            config['data_shards']) == (2, 2, 1)
    assert config['lr'] is None and config['lr_used'] == 1e-3  # D = 1
    # Every rank keeps its own snapshot for --resume.
    assert os.path.exists(str(tmp_path / 'snapshot_rank1_epoch1.npz'))
    log = json.load(open(str(tmp_path / 'log')))
    assert log[-1]['validation/main/accuracy'] > 0.3


def test_impossible_layout_ends_every_rank_with_the_message(mpiexec,
                                                             tmp_path):
    start = time.time()
    cmd = mpiexec(4) + [TRAIN] + SMALL + ['--samples', '3', '--out',
                                           str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert time.time() - start < 60
    assert 'cannot split 4 processes into 3 sample groups' in result.stderr


# Resuming

@pytest.mark.parametrize('opt, extra', [
    ('vogn', ['--augment', '--prior-precision', '50', '--mc', '2']),
    ('mcdropout', []),
])
def test_resume_after_kill_equals_uninterrupted_run(tmp_path, opt, extra):
    args = ['--optimizer', opt, '--epochs', '6', '--batchsize', '16'] + extra
    whole = str(tmp_path / 'whole')
    result = _train(args + ['--out', whole])
    assert result.returncode == 0, result.stderr

    cut = str(tmp_path / 'cut')
    proc = subprocess.Popen([sys.executable, TRAIN] + SMALL + args +
                            ['--out', cut], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_files(proc, [os.path.join(cut, 'snapshot_rank0_epoch2.npz')],
                   120)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(cut, 'model.npz')), \
        'the run finished before it could be killed'

    result = _train(args + ['--out', cut, '--resume'])
    assert result.returncode == 0, result.stderr
    assert 'resuming from epoch' in result.stdout
    assert_same_posterior(cut, whole)
    assert len(json.load(open(os.path.join(cut, 'log')))) == 6


def test_resume_without_snapshot_starts_afresh(tmp_path):
    result = _train(['--optimizer', 'adam', '--epochs', '1', '--out',
                     str(tmp_path), '--resume'])
    assert result.returncode == 0, result.stderr
    assert 'starting afresh' in result.stdout


# Study sets: a subset with noisy labels and a held-out validation part

STUDY = ['--train-size', '300', '--label-noise', '0.3', '--val-split', '0.2']


def _contents(folder):
    """{file name: bytes} of everything in ``folder``."""
    return {name: open(os.path.join(folder, name), 'rb').read()
            for name in sorted(os.listdir(folder))}


def test_study_set_is_recorded_reported_and_fixed_on_resume(tmp_path):
    run = str(tmp_path / 'run')
    result = _train(['--optimizer', 'vogn', '--prior-precision', '50',
                     '--epochs', '1', '--out', run] + STUDY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The log's validation/* numbers are on the validation set (60 " \
        'images; training on 240)' in result.stdout
    with open(os.path.join(run, 'config.json')) as f:
        config = json.load(f)
    assert config['held_out'] == {'name': 'validation', 'size': 60,
                                  'train_size': 240}
    assert config['dataset_info']['n_flipped'] == 90
    assert config['dataset_info']['n_train'] == 300
    assert config['dataset_info']['n_test'] == 360
    assert (config['train_size'], config['label_noise'],
            config['val_split']) == (300, 0.3, 0.2)
    assert config['dataset_size'] == 240  # VOGN's N: the images it trains on

    evaluated = subprocess.run(
        [sys.executable, os.path.join(REPO, 'evaluate.py'), run,
         '--mc-samples', '2', '--out', str(tmp_path / 'report')],
        capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    with open(str(tmp_path / 'report' / 'report.md')) as f:
        rows = [line for line in f if line.startswith('| run |')]
    assert len(rows) == 1
    data = rows[0].split('|')[3].strip()
    assert data == 'digits, 300 training images, 30 % label noise', data

    # Each of the three options decides the data: a resumption with any
    # of them changed is refused, naming it, and changes nothing.
    before = _contents(run)
    resumed = _train(['--optimizer', 'vogn', '--prior-precision', '50',
                      '--epochs', '1', '--out', run, '--resume',
                      '--train-size', '200', '--label-noise', '0.1',
                      '--val-split', '0.25'])
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    lines = resumed.stderr.splitlines()
    assert len(lines) == 1, resumed.stderr
    assert lines[0].startswith('train.py: error: --resume: ')
    for change in ('--train-size 300 -> 200', '--label-noise 0.3 -> 0.1',
                   '--val-split 0.2 -> 0.25'):
        assert change in lines[0], lines[0]
    assert _contents(run) == before


# Non-finite training stops at the step, keeping the last good snapshot

class _PoisonedInSecondEpoch(object):
    """Wraps a dataset; examples turn NaN halfway through the second epoch."""

    def __init__(self, dataset):
        self.dataset, self.reads = dataset, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.reads += 1
        x, t = self.dataset[i]
        if self.reads > 1.5 * len(self.dataset):
            x = x * numpy.nan
        return x, t


@pytest.mark.parametrize('opt, message', [
    ('vogn', r'VOGN step \d+: .*Lower lr \(train.py --lr\), raise damping '
             r'\(--damping\)'),
    ('adam', r'training diverged at iteration \d+ \(epoch 2\): the training '
             r'loss is nan; --lr \(now 0.001\) is most likely too large')])
def test_non_finite_loss_stops_with_last_good_snapshot(
        tmp_path, monkeypatch, opt, message):
    load = run_setup.load_data

    def poisoned(args, **kwargs):
        train, test, info = load(args, **kwargs)
        return _PoisonedInSecondEpoch(train), test, info

    monkeypatch.setattr(run_setup, 'load_data', poisoned)
    monkeypatch.setattr(training.distributed, 'abort_on_uncaught_exception',
                        lambda: None)
    args = run_options.parse_args(SMALL + ['--optimizer', opt, '--epochs', '3',
                                   '--out', str(tmp_path)])
    snapshot = str(tmp_path / 'snapshot_rank0_epoch1.npz')
    with pytest.raises(RunError, match=message + r'.*\. The newest good '
                       r'snapshot is {} \(epoch 1;'.format(snapshot)):
        training.run(args)
    assert not os.path.exists(str(tmp_path / 'model.npz'))
    with numpy.load(snapshot) as f:
        weights = [f[k] for k in f.files if k.startswith('updater/model:main/')
                   and k.endswith(('/W', '/b'))]
    assert weights and all(numpy.isfinite(w).all() for w in weights)
    assert not os.path.exists(str(tmp_path / 'snapshot_rank0_epoch2.npz'))


def test_weights_gone_non_finite_in_an_epochs_last_update_are_not_saved(
        tmp_path, monkeypatch):
    """The last update of epoch 1 makes a weight NaN while its loss, taken
    before the update, was finite: the run stops there, and no snapshot
    holds the NaN as a 'good' state."""
    update_core = training.Updater.update_core

    def poisoning(updater):
        update_core(updater)
        if updater.is_new_epoch and updater.epoch == 1:
            model = updater.get_optimizer('main').target
            next(iter(sorted(model.namedparams())))[1].array[...] = numpy.nan

    monkeypatch.setattr(training.Updater, 'update_core', poisoning)
    monkeypatch.setattr(training.distributed, 'abort_on_uncaught_exception',
                        lambda: None)
    args = run_options.parse_args(SMALL + ['--optimizer', 'adam', '--epochs',
                                           '3', '--out', str(tmp_path)])
    with pytest.raises(RunError, match=r'training diverged at iteration \d+ '
                       r'\(epoch \d\): parameter /\S+ is not finite; .*No '
                       r'snapshot was written before it'):
        training.run(args)
    assert not glob.glob(str(tmp_path / 'snapshot_*'))
    assert not os.path.exists(str(tmp_path / 'model.npz'))


@pytest.mark.parametrize('opt', ['vogn', 'adam'])
def test_diverging_run_fails_naming_lr_and_leaves_no_model(tmp_path, opt):
    """--lr 10 sends the loss past 100 times its start: one line, status 1,
    no model.npz for evaluate to score."""
    out = str(tmp_path / 'run')
    result = _train(['--optimizer', opt, '--lr', '10', '--epochs', '3',
                     '--out', out])
    assert result.returncode == 1
    assert re.fullmatch(
        r'train.py: error: training diverged at iteration \d+ \(epoch 1\): '
        r'the training loss is \S+, over 100 times the first step\'s \S+; '
        r'--lr \(now 10\) is most likely too large\. No snapshot was '
        r'written before it, so rerun with a smaller --lr, in this --out or '
        r'another\n', result.stderr), result.stderr
    assert not os.path.exists(os.path.join(out, 'model.npz'))


@pytest.mark.parametrize('option', [['--lr', 'inf'], ['--tau-init', 'nan']])
def test_non_finite_option_is_refused_at_parsing(tmp_path, option):
    result = _train(option + ['--out', str(tmp_path / 'run')])
    assert result.returncode == 2
    assert '{}: {} is invalid; it must be a finite number'.format(
        option[0][2:].replace('-', '_'), option[1]) in result.stderr
    assert not os.path.exists(str(tmp_path / 'run'))


# Output that reads well

def test_captured_output_has_no_escape_codes(tmp_path):
    result = subprocess.run(
        [sys.executable, TRAIN, '--dataset', 'digits', '--arch', 'mlp',
         '--epochs', '1', '--out', str(tmp_path / 'r')],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '\x1b' not in result.stdout + result.stderr
    assert '\r' not in result.stdout
    lines = result.stdout.splitlines()
    shown = [line for line in lines if line.startswith('training ')]
    assert len(shown) == 10 and shown[-1].startswith('training 100% ')
    held_out, derived, header = [line for line in lines
                                 if line not in shown][:3]
    assert held_out.startswith("The log's validation/* numbers are on the "
                               'test set (360 images; training on 1437)')
    assert derived.startswith('VOGN: lr = 0.001, tau = ')  # derived
    assert header.split()[:3] == ['epoch', 'iteration', 'main/loss']


@pytest.mark.parametrize('terminal', [True, False])
def test_progress_under_mpiexec_comes_from_rank_zero(mpiexec, tmp_path,
                                                     terminal):
    """A bar when mpiexec writes to a terminal, else a line at every
    tenth; rank 0's alone, with throughput and time left."""
    cmd = mpiexec(2) + [TRAIN, '--dataset', 'digits', '--arch', 'mlp',
                        '--epochs', '2', '--out', str(tmp_path / 'r')]
    if terminal:
        status, output = in_terminal(cmd)
    else:
        result = subprocess.run(cmd, capture_output=True, text=True,
                                timeout=300)
        status, output = result.returncode, result.stdout + result.stderr
    assert status == 0, output
    draws = bar_draws(output, 'training')
    lines = progress_lines(output, 'training')
    if terminal:
        assert not lines, output
        # One bar: its share only grows, and it is full once.
        assert len(draws) >= 2 and draws == sorted(draws), draws
        assert draws.count(100) == 1, draws
    else:
        assert not draws and '\r' not in output, output
        # 45 iterations: at each tenth rounded up
        assert lines == [11, 20, 31, 40, 51, 60, 71, 80, 91, 100], output
        assert output.count(' images/s') == 10


def test_no_progress_shows_nothing_on_a_terminal(tmp_path):
    status, output = in_terminal([sys.executable, TRAIN] + SMALL + [
        '--epochs', '1', '--out', str(tmp_path / 'r')])
    assert status == 0, output
    assert not bar_draws(output, 'training'), output
    assert not progress_lines(output, 'training'), output
    assert '\r' not in output and 'images/s' not in output, output
    assert '\x1b[J1 ' in output  # the epoch's row, as on a terminal


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_console_strips_escape_codes_unless_terminal(monkeypatch):
    for name in progress.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    text = '\x1b[J1    23    0.5\n\x1b[2A'
    plain = training.PlainConsole(io.StringIO())
    plain.write(text)
    assert plain.stream.getvalue() == '1    23    0.5\n'
    terminal = training.PlainConsole(Terminal())
    terminal.write(text)
    assert terminal.stream.getvalue() == text
    # mpiexec gives its ranks a pseudo-terminal even when its own output
    # goes to a file.
    monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '2')
    launched = training.PlainConsole(Terminal())
    launched.write(text)
    assert launched.stream.getvalue() == '1    23    0.5\n'


@pytest.mark.parametrize('learns_posterior, weights', [
    (True, 'mean weights'), (False, 'the weights')])
def test_loss_plot_is_labelled_on_a_log_axis(learns_posterior, weights):
    from matplotlib.figure import Figure
    figure = Figure()
    axes = figure.add_subplot(1, 1, 1)
    axes.plot([1, 2], [40.0, 0.5], label='main/loss')
    axes.plot([1, 2], [10.0, 0.4], label='validation/main/loss')
    axes.plot([1, 2], [9.0, 0.3], label='validation/predictive/nll')
    training._label_plot('loss (nats, log scale)', True,
                         training._series_names('validation',
                                                learns_posterior),
                         'the title')(figure, axes, None)
    assert axes.get_title() == 'the title'
    assert axes.get_yscale() == 'log'
    assert axes.get_xlabel() == 'epoch'
    assert axes.get_ylabel() == 'loss (nats, log scale)'
    assert [line.get_label() for line in axes.get_lines()] == [
        'training loss', 'validation loss ({})'.format(weights),
        'validation NLL (predictive)']


def test_plot_title_names_the_folder_optimizer_and_data():
    args = run_options.parse_args([
        '--optimizer', 'adam', '--dataset', 'digits', '--classes', '0-4',
        '--label-noise', '0.3', '--out', 'runs/noisy/adam/'])
    assert training._plot_title(args) == \
        'adam: adam (mlp) on digits classes 0-4, 30 % label noise'


def test_logged_validation_is_the_mean_over_test_examples(runs):
    """The digits' 360 test images go in batches of 256 and 104: the log
    must count each image once (as evaluate.py does), not average the two
    batch means.  Checked against the saved weights scored in one pass."""
    import chainer
    import chainer.functions as F
    from chainer_vogn import run_folder
    run = run_folder.Run(runs['adam'], 'adam')
    _, test, _ = run_setup.load_data(run.args)
    assert len(test) % run.args.eval_batchsize != 0
    x, t = chainer.dataset.concat_examples(test)
    model = run.build_model(run.info)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        log_p = F.log_softmax(model.predictor(x)).array.astype(numpy.float64)
    with open(os.path.join(runs['adam'], 'log')) as f:
        last = json.load(f)[-1]
    assert last['validation/main/accuracy'] == pytest.approx(
        numpy.mean(log_p.argmax(axis=1) == t), abs=1e-6)
    assert last['validation/main/loss'] == pytest.approx(
        -numpy.mean(log_p[numpy.arange(len(t)), t]), rel=1e-5)


def test_validation_epochs_are_every_interval_and_the_last():
    assert training.validation_epochs(1, 3) == [1, 2, 3]
    assert training.validation_epochs(3, 10) == [3, 6, 9, 10]
    assert training.validation_epochs(5, 50) == [5, 10, 15, 20, 25, 30, 35,
                                                 40, 45, 50]
    assert training.validation_epochs(20, 4) == [4]
