"""Sweep VOGN's hyperparameters against Adam and MC dropout on one data set.

Each setting is a real ``train.py`` run (under ``mpiexec`` for ``--processes``
> 1) scored by ``evaluate.py``, so every number in docs/tuning.md is what a
user gets from the same two commands.  One factor moves at a time around
``--base``; ``--train-size`` takes a fixed random subset of an MNIST-format
training set (written as idx files into the output folder).

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

from chainer_vogn import datasets
from chainer_vogn import experiment


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
                   help='random subset of the training set (MNIST format)')
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


def subset(args):
    """A folder with a random ``--train-size`` subset of the training set."""
    if args.train_size is None:
        return args.data_dir
    folder = os.path.join(args.out, 'data-{}'.format(args.train_size))
    if os.path.isdir(folder):
        return folder
    source = args.data_dir or datasets.DEFAULT_DATA_DIR
    read = datasets.read_mnist_format(source)
    if read is None:
        raise SystemExit('--train-size needs MNIST-format files in ' + source)
    x, t, x_test, t_test = read
    keep = numpy.sort(numpy.random.RandomState(0).permutation(
        len(t))[:args.train_size])
    os.makedirs(folder)
    datasets.write_mnist_format(folder, x[keep, 0], t[keep], x_test[:, 0],
                                t_test)
    return folder


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


def train_and_evaluate(args, data_dir, name, optimizer, extra, seed):
    run = os.path.join(args.out, '{}-seed{}'.format(name, seed))
    report = run + '-report'
    if os.path.exists(os.path.join(report, 'report.json')):
        return _metrics(report)
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(report, ignore_errors=True)
    mpi = []
    samples = []
    if args.processes > 1:
        mpi = mpiexec_prefix(args.processes, 'self,tcp')
        if optimizer == 'vogn':
            samples = ['--samples', str(args.samples)]
    data = ['--data-dir', data_dir] if data_dir else []
    start = time.time()
    trained = subprocess.run(
        mpi + [sys.executable, os.path.join(REPO, 'train.py'),
               '--dataset', args.dataset, '--arch', args.arch,
               '--optimizer', optimizer, '--epochs', str(args.epochs),
               '--seed', str(seed), '--out', run, '--no-progress',
               '--val-samples', '0'] + data + samples + extra,
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
    experiment.write_json(os.path.join(report, 'seconds.json'), seconds)
    return _metrics(report)


def _metrics(report):
    with open(os.path.join(report, 'report.json')) as f:
        metrics = json.load(f)['runs'][0]['metrics']
    seconds = os.path.join(report, 'seconds.json')
    if os.path.exists(seconds):
        with open(seconds) as f:
            metrics['train_seconds'] = json.load(f)
    return metrics


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    data_dir = subset(args)
    seeds = [int(s) for s in args.seeds.split(',')]
    print('| run | accuracy (%) | NLL | ECE | misclassification AUROC | '
          'train s |')
    print('|---|---|---|---|---|---|')
    for name, optimizer, extra in settings(args):
        rows = [train_and_evaluate(args, data_dir, name, optimizer, extra,
                                   seed) for seed in seeds]

        def mean(key):
            values = [r.get(key) for r in rows]
            return numpy.mean([numpy.nan if v is None else v for v in values])

        print('| {} | {:.2f} | {:.3f} | {:.3f} | {:.3f} | {:.0f} |'.format(
            name, 100 * mean('accuracy'), mean('nll'), mean('ece'),
            mean('misclassification_auroc'), mean('train_seconds')),
            flush=True)


if __name__ == '__main__':
    main()
