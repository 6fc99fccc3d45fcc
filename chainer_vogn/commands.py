"""The command lines: train.py, evaluate.py and predict.py.

Each ``*_main(argv=None)`` is one command, for the scripts beside the
package and for console entry points alike.  They share one parser style
(:class:`~chainer_vogn.run_options.ArgumentParser`: a bad option is one line
and exit status 2) and one exit policy
(:func:`~chainer_vogn.errors.exit_cleanly`: an expected failure is one line
and exit status 1).
"""
import argparse
import os
import sys

import numpy

from chainer_vogn import datasets
from chainer_vogn import errors
from chainer_vogn import evaluation
from chainer_vogn import mpi
from chainer_vogn import ood
from chainer_vogn import predictive
from chainer_vogn import run_folder
from chainer_vogn import run_options
from chainer_vogn.run_options import at_least


def program(argv, script):
    """The command's name in its usage and error lines: the one the user
    ran (train.py, or chainer-vogn-train when installed) when ``argv`` is
    None (sys.argv), else ``script``."""
    return os.path.basename(sys.argv[0]) if argv is None else script


def train_main(argv=None):
    """train.py: train with an optimizer of the registry, on one process or
    many (``mpiexec -n P``); see :func:`chainer_vogn.training.run`."""
    prog = program(argv, 'train.py')
    with errors.exit_cleanly(prog, '; resume with --resume'):
        args = run_options.parse_args(argv, prog)
        mpi.require_mpi(prog)
        # Imported here: evaluate.py and predict.py never load the Trainer.
        from chainer_vogn import training
        training.run(args)


def _ood(text):
    try:
        ood.parse_ood(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


def evaluate_parser(prog='evaluate.py'):
    """evaluate.py's parser, named ``prog``."""
    p = run_options.ArgumentParser(
        prog=prog,
        description='Evaluate train.py runs: VOGN and IVON with T weight '
                    'samples, MC dropout with T dropout passes, Adam/SGD '
                    'with one pass. '
                    'Writes report.json/csv/md, ROC, reliability, entropy and '
                    'gallery figures and predictions.npz into --out.')
    p.add_argument('runs', nargs='+', metavar='RUN',
                   help='--out folders of train.py runs (config.json and '
                        'model.npz)')
    p.add_argument('--out', type=run_options.folder, default='report',
                   help='output folder')
    p.add_argument('--ood', type=_ood, default='none',
                   help='out-of-distribution set: none, {} or holdout:A-B '
                        '(the test examples of classes A..B of the run\'s own '
                        'data set, held out with train.py --classes)'.format(
                            ', '.join(datasets.DATASETS)))
    p.add_argument('--mc-samples', type=at_least(1, 'T (--mc-samples)'),
                   default=10, metavar='T',
                   help='Monte Carlo samples of VOGN, IVON and MC dropout '
                        'runs (Adam/SGD always use 1)')
    p.add_argument('--ece-bins', type=at_least(1, '--ece-bins'), default=15,
                   help='equal-width confidence bins of the expected '
                        'calibration error and the reliability diagram')
    p.add_argument('--data-dir', default=None,
                   help='data folder (default: the one each run used)')
    p.add_argument('--device', type=int, default=-1,
                   help='-1: CPU; >= 0: GPU, rank r uses device + its rank '
                        'on the node')
    p.add_argument('--seed', type=at_least(0, '--seed'), default=0,
                   help='sample t uses the seed (seed, t)')
    p.add_argument('--batchsize', type=at_least(1, '--batchsize'),
                   default=256, help='examples per forward pass')
    p.add_argument('--names', default=None, metavar='A,B,...',
                   help='names of the runs in the report (default: the '
                        'folder names)')
    p.add_argument('--no-progress', dest='progress', action='store_false',
                   help='no progress output (default: on rank 0, a bar '
                        'when the output, mpiexec\'s under mpiexec, goes to '
                        'a terminal, else a line at every tenth of each '
                        'run\'s passes; with the time left and images/s)')
    return p


def evaluate_main(argv=None):
    """evaluate.py: evaluate runs together (under mpiexec the Monte Carlo
    samples are split over the processes); see
    :func:`chainer_vogn.evaluation.evaluate`."""
    prog = program(argv, 'evaluate.py')
    with errors.exit_cleanly(prog):
        args = evaluate_parser(prog).parse_args(argv)
        mpi.require_mpi(prog)
        evaluation.evaluate(args)


def read_images(path, info):
    """The images in ``path`` as a batch (N, C, H, W) on the [0, 1] scale,
    in the layout of ``info``'s data set; RunError naming ``path`` if they
    cannot be read or do not fit."""
    try:
        return _read_images(path, info)
    except (ValueError, OSError) as e:
        if getattr(e, 'filename', None) is not None:
            raise  # it names its file already
        raise errors.RunError('{}: {}'.format(path,
                                              errors.describe_failure(e)))


def _read_images(path, info):
    if path.endswith('.npy'):
        return run_folder.as_batch(numpy.load(path), info)
    from PIL import Image
    channels, side = datasets.image_shape(info['name'])
    with Image.open(path) as image:
        image = image.convert('L' if channels == 1 else 'RGB')
        if image.size != (side, side):
            image = image.resize((side, side), Image.BILINEAR)
        x = numpy.asarray(image, numpy.float32) / 255
    return run_folder.as_batch(x if channels == 1 else x.transpose(2, 0, 1),
                               info)


def describe(found, classes, row, top):
    """One line: the ``top`` classes of image ``row`` and its uncertainty."""
    probs = found.probs[row]
    best = numpy.argsort(-probs, kind='stable')[:top]
    return '{}; entropy {:.3f} nats, mutual information {:.3f} nats'.format(
        ', '.join('{} {:.1%}'.format(classes[k], probs[k]) for k in best),
        found.entropy[row], found.mutual_information[row])


def predict_parser(prog='predict.py'):
    """predict.py's parser, named ``prog``."""
    p = run_options.ArgumentParser(
        prog=prog,
        description='Predictive probabilities and uncertainty of a train.py '
                    'run on images (PNG/JPEG files or .npy arrays on the '
                    '[0, 1] scale).')
    p.add_argument('run', metavar='RUN',
                   help='--out folder of a train.py run')
    p.add_argument('images', nargs='+', metavar='IMAGE',
                   help='.png/.jpg (resized to the data set\'s size) or .npy '
                        '(one image or a batch, (H, W) or (C, H, W) each)')
    p.add_argument('-T', '--mc-samples', type=at_least(1, 'T'), default=10,
                   metavar='T',
                   help='Monte Carlo samples (VOGN, IVON, MC dropout; point '
                        'runs use 1)')
    p.add_argument('--seed', type=at_least(0, '--seed'), default=0,
                   help='sample t uses the seed (seed, t)')
    p.add_argument('--top', type=at_least(1, '--top'), default=3,
                   help='classes shown per image')
    p.add_argument('--device', type=_device, default=-1,
                   help='-1: CPU; >= 0: GPU (or a Chainer device such as '
                        '@cupy:0)')
    return p


def _device(text):
    """--device of predict.py: an int as train.py's, or a Chainer
    specifier ('@numpy', '@cupy:0')."""
    if text.startswith('@'):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            '{!r} is invalid; pass -1 (CPU), a GPU number or a Chainer '
            'device such as @cupy:0'.format(text))


def predict_main(argv=None):
    """predict.py: for each image, the run's most probable classes with
    their probabilities and the uncertainty (the predictive entropy and the
    mutual information, the part due to the weights).  It needs no MPI.
    The library function behind it is :func:`chainer_vogn.predict`."""
    prog = program(argv, 'predict.py')
    with errors.exit_cleanly(prog):
        args = predict_parser(prog).parse_args(argv)
        run = run_folder.Run(args.run, args.run)
        batches = [(path, read_images(path, run.info))
                   for path in args.images]
        found = run_folder.predict(
            run, numpy.concatenate([x for _, x in batches]),
            args.mc_samples, args.seed, args.device)
        print('{}: {}; T = {} ({})'.format(
            args.run, run.describe(),
            predictive.samples_used(run.method, args.mc_samples), run.method))
        row = 0
        for path, x in batches:
            for k in range(len(x)):
                name = path if len(x) == 1 else '{}[{}]'.format(path, k)
                print('{}: {}'.format(name, describe(found, run.classes, row,
                                                     args.top)))
                row += 1
