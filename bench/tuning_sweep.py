"""Sweep VOGN's hyperparameters against Adam and MC dropout on one data set.

Each setting is a real ``train.py`` run (under ``mpiexec`` for ``--processes``
> 1) scored by ``evaluate.py``, so every number in docs/tuning.md is what a
user gets from the same two commands.  One factor moves at a time around
``--base``; ``--train-size`` and ``--label-noise`` go to every run (train.py's
study sets).  With ``--val-samples T`` each run also logs the T-sample
predictive NLL on the test set after every epoch: the table then gives the
best epoch's NLL and how far the final one has climbed from it, and
``nll_curves.png`` draws the curves.

    python bench/tuning_sweep.py --dataset digits --arch mlp --epochs 10 \\
        --vary tau=1,0.3,0.1 --vary prior-precision=1,10,100 --out runs/sweep
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from _common import REPO, mpiexec_prefix

import numpy

from chainer_vogn import files
from chainer_vogn import registry


def _setting(text):
    name, _, values = text.partition('=')
    if not name or not values:
        raise argparse.ArgumentTypeError(
            'expected NAME=V1,V2,... such as tau=1,0.1; got {!r}'.format(text))
    return name, values.split(',')


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--dataset', default='digits')
    p.add_argument('--arch', default='mlp')
    p.add_argument('--data-dir', default=None)
    p.add_argument('--train-size', type=int, default=None,
                   help="train.py's --train-size, for every run")
    p.add_argument('--label-noise', type=float, default=0.0,
                   help="train.py's --label-noise, for every run")
    p.add_argument('--val-samples', type=int, default=0, metavar='T',
                   help='log the T-sample predictive NLL on the test set '
                        'after every --val-interval epochs (0: no curves)')
    p.add_argument('--val-interval', type=int, default=1, metavar='E')
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--processes', type=int, default=1, metavar='P')
    p.add_argument('--samples', type=int, default=1, metavar='S')
    p.add_argument('--base', default='', metavar='"--opt V ..."',
                   help='VOGN options every setting shares')
    p.add_argument('--vary', type=_setting, action='append', default=[],
                   metavar='NAME=V1,V2', help='one option and its values')
    p.add_argument('--baselines', default='adam,mcdropout')
    p.add_argument('--mc-samples', type=int, default=10, metavar='T')
    p.add_argument('--seeds', default='0', help='comma-separated seeds')
    p.add_argument('--out', required=True)
    return p


def settings(args):
    """(name, optimizer, extra options) of every run."""
    runs = [('vogn-base', 'vogn', args.base.split())]
    for name, values in args.vary:
        for value in values:
            runs.append(('vogn-{}={}'.format(name, value), 'vogn',
                         args.base.split() + ['--' + name, value]))
    for baseline in filter(None, args.baselines.split(',')):
        runs.append((baseline, baseline, []))
    return runs


def train_and_evaluate(args, name, optimizer, extra, seed):
    run = os.path.join(args.out, '{}-seed{}'.format(name, seed))
    report = run + '-report'
    if os.path.exists(os.path.join(report, 'report.json')):
        return _metrics(run, report)
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(report, ignore_errors=True)
    mpi = []
    samples = []
    if args.processes > 1:
        mpi = mpiexec_prefix(args.processes, 'self,tcp')
        if registry.OPTIMIZERS[optimizer].sampling == 'weights':
            samples = ['--samples', str(args.samples)]
    data = ['--data-dir', args.data_dir] if args.data_dir else []
    if args.train_size is not None:
        data += ['--train-size', str(args.train_size)]
    if args.label_noise:
        data += ['--label-noise', str(args.label_noise)]
    start = time.time()
    trained = subprocess.run(
        mpi + [sys.executable, os.path.join(REPO, 'train.py'),
               '--dataset', args.dataset, '--arch', args.arch,
               '--optimizer', optimizer, '--epochs', str(args.epochs),
               '--seed', str(seed), '--out', run, '--no-progress',
               '--val-samples', str(args.val_samples),
               '--val-interval', str(args.val_interval)] + data + samples +
        extra,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.time() - start
    if trained.returncode:  # a diverged setting is a result too
        lines = trained.stderr.strip().splitlines()
        print('{}: {}'.format(name, lines[-1] if lines else 'exit status {}'
                              .format(trained.returncode)), file=sys.stderr)
        return {'accuracy': float('nan'), 'train_seconds': seconds}
    subprocess.run([sys.executable, os.path.join(REPO, 'evaluate.py'), run,
                    '--mc-samples', str(args.mc_samples), '--out', report],
                   check=True, stdout=subprocess.DEVNULL)
    files.write_json(os.path.join(report, 'seconds.json'), seconds)
    return _metrics(run, report)


#: The logged series of the predictive's NLL (VOGN, MC dropout) and of the
#: one-pass NLL (Adam, SGD), on the test set without --val-split.
_CURVE_KEYS = ('validation/predictive/nll', 'validation/main/loss')


def _metrics(run, report):
    """evaluate.py's metrics of ``run``, its training seconds and, when it
    logged them, its per-epoch test NLL (``curve``)."""
    with open(os.path.join(report, 'report.json')) as f:
        metrics = json.load(f)['runs'][0]['metrics']
    seconds = os.path.join(report, 'seconds.json')
    if os.path.exists(seconds):
        with open(seconds) as f:
            metrics['train_seconds'] = json.load(f)
    with open(os.path.join(run, 'log')) as f:
        log = json.load(f)
    key = next(k for k in _CURVE_KEYS if any(k in entry for entry in log))
    metrics['curve'] = [(entry['epoch'], entry[key]) for entry in log
                        if key in entry]
    return metrics


def plot_curves(curves, path):
    """The mean test NLL of each setting by epoch, one line each:
    ``curves`` maps a name to (epochs, NLLs)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (epochs, curve) in curves.items():
        ax.plot(epochs, curve, marker='.', label=name)
    ax.set_xlabel('epoch')
    ax.set_ylabel('test NLL (nats)')
    ax.legend(fontsize='small')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(',')]
    curves = args.val_samples > 0
    print('| run | accuracy (%) | NLL | ECE | misclassification AUROC | ' +
          ('best epoch NLL | final / best | ' if curves else '') + 'train s |')
    print('|---|---|---|---|---|---|' + ('---|---|' if curves else ''))
    mean_curves = {}
    for name, optimizer, extra in settings(args):
        rows = [train_and_evaluate(args, name, optimizer, extra, seed)
                for seed in seeds]

        def mean(key):
            values = [r.get(key) for r in rows]
            return numpy.mean([numpy.nan if v is None else v for v in values])

        cells = [100 * mean('accuracy'), mean('nll'), mean('ece'),
                 mean('misclassification_auroc')]
        text = '| {} | {:.2f} | {:.3f} | {:.3f} | {:.3f} | '.format(name, *cells)
        if curves and all('curve' in r for r in rows):
            epochs = [epoch for epoch, _ in rows[0]['curve']]
            curve = numpy.mean([[v for _, v in r['curve']] for r in rows],
                               axis=0)
            mean_curves[name] = epochs, curve
            text += '{:.3f} (epoch {}) | {:.2f} | '.format(
                curve.min(), epochs[int(curve.argmin())],
                curve[-1] / curve.min())
        elif curves:
            text += '- | - | '
        print(text + '{:.0f} |'.format(mean('train_seconds')), flush=True)
    if mean_curves:
        plot_curves(mean_curves, os.path.join(args.out, 'nll_curves.png'))


if __name__ == '__main__':
    main()
