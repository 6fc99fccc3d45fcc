"""chainer_vogn.predict's inputs: raw images in any of the accepted layouts,
prepared exactly as datasets.get_dataset prepares its own."""
import numpy
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import chainer_vogn  # NOQA
from chainer_vogn import datasets
from chainer_vogn import run_folder


def digits_test_images():
    """The digits test split on the [0, 1] scale, straight from
    scikit-learn (the split datasets.py documents)."""
    digits = load_digits()
    _, x, _, _ = train_test_split(digits.images, digits.target,
                                  test_size=0.2, stratify=digits.target,
                                  random_state=0)
    return x / 16.0


@pytest.mark.parametrize('image_size', [None, 32])
def test_prepared_images_are_the_data_sets_own(image_size):
    _, test, info = datasets.get_dataset('digits', image_size=image_size)
    want = numpy.stack([x for x, _ in test])
    got = datasets.prepare_images(digits_test_images()[:, None], info)
    assert got.dtype == numpy.float32 and got.shape == want.shape
    numpy.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_prepare_refuses_other_sizes():
    info = datasets.get_dataset('digits')[2]
    with pytest.raises(ValueError, match=r'digits images must have shape '
                                         r'\(N, 1, 8, 8\), got '
                                         r'\(2, 1, 9, 9\)'):
        datasets.prepare_images(numpy.zeros((2, 1, 9, 9)), info)


GREY = {'name': 'digits'}
COLOUR = {'name': 'cifar10'}


@pytest.mark.parametrize('info,shape,batch', [
    (GREY, (8, 8), (1, 1, 8, 8)),
    (GREY, (1, 8, 8), (1, 1, 8, 8)),
    (GREY, (5, 8, 8), (5, 1, 8, 8)),
    (GREY, (5, 1, 8, 8), (5, 1, 8, 8)),
    (COLOUR, (3, 32, 32), (1, 3, 32, 32)),
    (COLOUR, (4, 3, 32, 32), (4, 3, 32, 32)),
])
def test_one_image_or_a_batch(info, shape, batch):
    x = numpy.random.RandomState(0).uniform(size=shape)
    got = run_folder.as_batch(x, info)
    assert got.shape == batch
    numpy.testing.assert_array_equal(got.ravel(), x.astype('f').ravel())


@pytest.mark.parametrize('info,shape', [
    (GREY, (9, 9)), (GREY, (2, 3, 8, 8)), (GREY, (2, 2, 1, 8, 8)),
    (COLOUR, (32, 32)), (COLOUR, (32, 32, 3)),
])
def test_other_layouts_are_refused(info, shape):
    with pytest.raises(ValueError, match='do not fit'):
        run_folder.as_batch(numpy.zeros(shape), info)


@pytest.mark.parametrize('x, message', [
    (numpy.zeros((0, 8, 8)), r'no images: an empty array of shape '
                             r'\(0, 8, 8\)'),
    (numpy.full((8, 8), numpy.nan), 'NaN or infinite'),
    (numpy.full((8, 8), 16.0), r'images span 16..16, outside the \[0, 1\] '
                               'scale'),
    (numpy.arange(64.0).reshape(8, 8) * 4, r'images span 0..252, outside'),
])
def test_images_off_the_unit_scale_are_refused_with_the_scale_found(
        x, message):
    with pytest.raises(ValueError, match=message):
        run_folder.as_batch(x, GREY)


def test_evaluation_side_does_not_import_training():
    """Evaluation builds runs through chainer_vogn.run_setup, never
    through the Trainer wiring (issue 11); the commands load it for
    train.py only."""
    import subprocess
    import sys
    code = ('import sys\n'
            'import chainer_vogn.evaluation, chainer_vogn.run_folder, '
            'chainer_vogn.ood, chainer_vogn.predictive\n'
            'import chainer_vogn.commands\n'
            'print("chainer_vogn.training" in sys.modules)\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.strip() == 'False', result.stdout + result.stderr
