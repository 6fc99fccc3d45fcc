"""How sure is a trained run about these images?

    python -m chainer_vogn.predict RUN image.png digit.npy ... [-T 20]

prints, for each image, the run's most probable classes with their
probabilities and the uncertainty: the predictive entropy and the mutual
information (the part due to the weights).  Images are PNG/JPEG files,
converted to the data set's channels and resized to its native size, or .npy
files holding one image or a batch on the [0, 1] scale ((H, W) or (C, H, W)
per image).  The library function behind it is :func:`chainer_vogn.predict`
(this module is the command; import the function from ``chainer_vogn``).
"""
import argparse
import sys

import numpy

import chainer_vogn  # NOQA: makes chainer importable on every stack
from chainer_vogn import datasets
from chainer_vogn import inference
from chainer_vogn import predictive
from chainer_vogn.errors import RunError
from chainer_vogn.run_options import at_least


def read_images(path, info):
    """The images in ``path`` as a batch (N, C, H, W) on the [0, 1] scale,
    in the layout of ``info``'s data set."""
    if path.endswith('.npy'):
        return inference.as_batch(numpy.load(path), info)
    from PIL import Image
    channels, side = datasets.image_shape(info['name'])
    with Image.open(path) as image:
        image = image.convert('L' if channels == 1 else 'RGB')
        if image.size != (side, side):
            image = image.resize((side, side), Image.BILINEAR)
        x = numpy.asarray(image, numpy.float32) / 255
    return inference.as_batch(x if channels == 1 else x.transpose(2, 0, 1),
                              info)


def describe(found, classes, row, top):
    """One line: the ``top`` classes of image ``row`` and its uncertainty."""
    probs = found.probs[row]
    best = numpy.argsort(-probs, kind='stable')[:top]
    return '{}; entropy {:.3f} nats, mutual information {:.3f} nats'.format(
        ', '.join('{} {:.1%}'.format(classes[k], probs[k]) for k in best),
        found.entropy[row], found.mutual_information[row])


def build_parser():
    p = argparse.ArgumentParser(
        prog='python -m chainer_vogn.predict',
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
                   help='Monte Carlo samples (VOGN, MC dropout; point runs '
                        'use 1) (default: %(default)s)')
    p.add_argument('--seed', type=at_least(0, '--seed'), default=0,
                   help='sample t uses the seed (seed, t) (default: '
                        '%(default)s)')
    p.add_argument('--top', type=at_least(1, '--top'), default=3,
                   help='classes shown per image (default: %(default)s)')
    p.add_argument('--device', default=None,
                   help='Chainer device such as @cupy:0 (default: the CPU)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run = inference.Run(args.run, args.run)
        batches = [(path, read_images(path, run.info))
                   for path in args.images]
        found = chainer_vogn.predict(
            run, numpy.concatenate([x for _, x in batches]),
            args.mc_samples, args.seed, args.device)
    except (RunError, ValueError, OSError) as e:
        sys.stderr.write('python -m chainer_vogn.predict: error: {}\n'.format(
            e))
        return 1
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
    return 0


if __name__ == '__main__':
    sys.exit(main())
