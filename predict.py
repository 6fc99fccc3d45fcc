#!/usr/bin/env python
"""How sure is a trained run about these images?

    python predict.py RUN image.png digit.npy ... [-T 20]

prints, for each image, the run's most probable classes with their
probabilities and the uncertainty: the predictive entropy and the mutual
information (the part due to the weights).  Images are PNG/JPEG files,
converted to the data set's channels and resized to its native size, or .npy
files holding one image or a batch on the [0, 1] scale ((H, W) or (C, H, W)
per image).  The command is :func:`chainer_vogn.commands.predict_main`; the
library function behind it is :func:`chainer_vogn.predict`.
"""
import sys

try:
    import chainer_vogn  # NOQA: makes chainer importable on every stack
    from chainer_vogn.commands import predict_main
except KeyboardInterrupt:  # Ctrl-C while the libraries load
    sys.stderr.write('predict.py: interrupted\n')
    sys.exit(130)


if __name__ == '__main__':
    sys.exit(predict_main())
