"""The bench/ scripts in their smoke mode, so that they keep working."""
import json
import math
import os
import subprocess
import sys

import numpy
from chainer.backends import cuda

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, tmp_path):
    """Run bench/<script> --smoke; return (stdout, its JSON or None)."""
    out = tmp_path / 'out.json'
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, 'bench', script), '--smoke',
         '--out', str(out)],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


def _positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_step_time(tmp_path):
    _, data = _run('step_time.py', tmp_path)
    assert data['machine']['cores'] >= 1
    assert [r['arch'] for r in data['results']] == ['lenet5', 'resnet18']
    for r in data['results']:
        for key in ('adam_s', 'mcdropout_s', 'vogn_s', 'vogn_over_adam',
                    'ivon_s', 'ivon_over_adam'):
            assert _positive(r[key]), (key, r[key])
        assert set(r['vogn_split_s']) == {
            'forward', 'backward', 'hook', 'sampling', 'update',
            'communication', 'other'}
        for phase in ('forward', 'backward', 'hook', 'sampling', 'update'):
            assert _positive(r['vogn_split_s'][phase]), phase


def test_scaling(tmp_path):
    _, data = _run('scaling.py', tmp_path)
    r, = data['results']
    for run in ('single', 'samples', 'data'):
        assert _positive(r[run]['iteration_s']), run
        assert _positive(r[run]['allreduce_s']), run
    assert _positive(r['samples_over_single'])
    assert _positive(r['data_over_single'])
    assert data['machine']['OPENBLAS_NUM_THREADS'] == '1 per process'


def test_memory(tmp_path):
    _, data = _run('memory.py', tmp_path)
    result = data['result']
    assert result['measure'] == 'peak_rss_bytes'
    for name in ('adam', 'vogn'):
        assert result[name]['peak_rss_bytes'] >= \
            result[name]['before_steps_bytes'] > 0
    assert _positive(result['vogn_over_adam'])


def test_kernel_skips_without_a_gpu(tmp_path):
    stdout, data = _run('kernel.py', tmp_path)
    if not cuda.available:
        assert stdout.startswith('skipped: no GPU')
        assert 'skipped' in data
        return
    for dtype in ('float32', 'float64'):
        for name in ('copy', 'update'):
            assert _positive(data['results'][dtype][name]['bytes_per_s'])


def test_tuning_sweep_trains_evaluates_and_tabulates(tmp_path):
    """One VOGN setting and one baseline on a 300-image noisy subset of
    fabricated MNIST-format files: every run trains on the subset, is
    scored, and its per-epoch NLL curve is tabulated and drawn."""
    from chainer_vogn import datasets
    rng = numpy.random.RandomState(0)
    source = tmp_path / 'source'
    source.mkdir()
    datasets.write_mnist_format(
        str(source), rng.randint(0, 256, (400, 28, 28)),
        numpy.arange(400) % 10, rng.randint(0, 256, (50, 28, 28)),
        numpy.arange(50) % 10)
    out = tmp_path / 'sweep'
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, 'bench', 'tuning_sweep.py'),
         '--dataset', 'mnist', '--arch', 'mlp', '--data-dir', str(source),
         '--train-size', '300', '--label-noise', '0.2', '--epochs', '3',
         '--vary', 'lr=3e-3', '--baselines', 'adam', '--mc-samples', '2',
         '--val-samples', '2', '--val-interval', '2', '--out', str(out)],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split('|')[1:-1] for line in proc.stdout.splitlines()
            if line.startswith('| ') and not line.startswith('| run')]
    assert [row[0].strip() for row in rows] == [
        'vogn-base', 'vogn-lr=3e-3', 'adam']
    for name, row in zip(('vogn-base', 'vogn-lr=3e-3', 'adam'), rows):
        with open(str(out / (name + '-seed0') / 'log')) as f:
            log = json.load(f)
        key = 'validation/main/loss' if name == 'adam' else \
            'validation/predictive/nll'
        # --val-interval 2 with 3 epochs: after epochs 2 and 3 (the last)
        curve = {entry['epoch']: entry[key] for entry in log if key in entry}
        assert sorted(curve) == [2, 3]
        best = min(curve.values())
        assert row[5].strip() == '{:.3f} (epoch {})'.format(
            best, min(curve, key=curve.get))
        assert row[6].strip() == '{:.2f}'.format(curve[3] / best)
    config = json.load(open(str(out / 'vogn-lr=3e-3-seed0' /
                                'config.json')))
    assert config['lr'] == 3e-3 and config['dataset_info']['n_train'] == 300
    assert config['label_noise'] == 0.2
    assert config['dataset_info']['n_flipped'] == 60
    assert (out / 'nll_curves.png').stat().st_size > 0