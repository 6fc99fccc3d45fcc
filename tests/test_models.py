import chainer_vogn  # NOQA: before chainer
import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from chainer_vogn import models
from chainer_vogn.curvature import SquaredGradientHook

SUPPORTED = (L.Linear, L.Convolution2D, L.BatchNormalization)
CONV_ARCHS = ['lenet5', 'alexnet', 'resnet18']


def batch(n=2, channels=3, size=32, seed=0):
    rng = numpy.random.RandomState(seed)
    return rng.randn(n, channels, size, size).astype(numpy.float32)


def forward(model, x, train=True, mc_dropout=False):
    with chainer.using_config('train', train), \
            chainer.using_config('mc_dropout', mc_dropout):
        return model(x).array


@pytest.mark.parametrize('arch', models.ARCHS)
def test_logits_shape_on_cifar_size(arch):
    model = models.get_model(arch, 10)
    assert model.arch == arch and model.dropout == 0.0
    y = model(batch())
    assert y.shape == (2, 10) and y.dtype == numpy.float32


def test_mlp_and_lenet5_on_other_inputs():
    mlp = models.get_model('mlp', 10)
    assert mlp(batch(channels=1, size=8)).shape == (2, 10)
    lenet = models.get_model('lenet5', 7, in_channels=1)
    assert lenet(batch(channels=1, size=40)).shape == (2, 7)


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(ValueError) as e:
        models.get_model('vgg16', 10)
    for arch in ('mlp', 'lenet5', 'alexnet', 'resnet18'):
        assert arch in str(e.value)


@pytest.mark.parametrize('arch', models.ARCHS)
def test_only_supported_links_hold_parameters(arch):
    model = models.get_model(arch, 10, dropout=0.1)
    model(batch())  # initialise the lazy Linear layers
    covered = set()
    for link in model.links():
        own = [p for name, p in link.namedparams() if name.count('/') == 1]
        if own:
            assert isinstance(link, SUPPORTED), type(link)
            covered.update(id(p) for p in own)
    assert covered == {id(p) for p in model.params()}


def test_lenet5_and_alexnet_layers():
    lenet = models.get_model('lenet5', 10)
    lenet(batch())
    assert lenet.conv1.W.shape == (6, 3, 5, 5)
    assert lenet.conv2.W.shape == (16, 6, 5, 5)
    assert lenet.fc1.W.shape == (120, 16 * 5 * 5)
    assert lenet.fc2.W.shape == (84, 120)
    assert lenet.fc3.W.shape == (10, 84)

    alexnet = models.get_model('alexnet', 10)
    alexnet(batch())
    convs = [alexnet.conv1, alexnet.conv2, alexnet.conv3, alexnet.conv4,
             alexnet.conv5]
    assert [c.W.shape[0] for c in convs] == [64, 192, 384, 256, 256]
    assert alexnet.fc.W.shape == (10, 256)
    assert not any(isinstance(link, L.BatchNormalization)
                   for link in alexnet.links())


def test_resnet18_structure():
    model = models.get_model('resnet18', 100)
    links = list(model.links())
    convs = [link for link in links if isinstance(link, L.Convolution2D)]
    bns = [link for link in links if isinstance(link, L.BatchNormalization)]
    # stem + 8 blocks of two + 3 projection shortcuts
    assert len(convs) == 1 + 16 + 3
    assert len(bns) == len(convs)
    assert all(conv.b is None for conv in convs)
    assert model.conv1.W.shape == (64, 3, 3, 3)
    assert model.fc.W.shape == (100, 512)


@pytest.mark.parametrize('arch', models.ARCHS)
def test_mc_dropout_rule(arch):
    model = models.get_model(arch, 10, dropout=0.5)
    assert model.dropout == 0.5
    x = batch()
    assert not numpy.allclose(forward(model, x), forward(model, x))
    assert not numpy.allclose(forward(model, x, train=False, mc_dropout=True),
                              forward(model, x, train=False, mc_dropout=True))
    numpy.testing.assert_array_equal(forward(model, x, train=False),
                                     forward(model, x, train=False))


def test_no_dropout_is_deterministic_in_training():
    model = models.get_model('lenet5', 10)
    x = batch()
    numpy.testing.assert_array_equal(forward(model, x), forward(model, x))


def test_dropout_active_helper():
    with chainer.using_config('train', True):
        assert models.dropout_active()
    with chainer.using_config('train', False):
        assert not models.dropout_active()
        with chainer.using_config('mc_dropout', True):
            assert models.dropout_active()


def test_mc_dropout_keeps_batch_normalization_in_test_mode():
    model = models.get_model('resnet18', 10, dropout=0.5)
    mean = model.bn1.avg_mean.copy()
    x = batch()
    forward(model, x, train=False, mc_dropout=True)
    numpy.testing.assert_array_equal(model.bn1.avg_mean, mean)
    forward(model, x, train=True)
    assert not numpy.array_equal(model.bn1.avg_mean, mean)


@pytest.mark.parametrize('arch', models.ARCHS)
def test_backward_and_curvature_hook_cover_every_parameter(arch):
    model = models.get_model(arch, 10, dropout=0.2)
    x = batch(n=3)
    t = numpy.array([0, 3, 9], dtype=numpy.int32)
    model(x)  # initialise the lazy Linear layers
    model.cleargrads()
    named = list(model.namedparams())
    hook = SquaredGradientHook(named)
    with hook:
        loss = F.softmax_cross_entropy(model(x), t)
        loss.backward()
    for name, param in named:
        assert param.grad is not None, name
        assert numpy.isfinite(param.grad).all(), name
    assert set(hook.squared) == {name for name, _ in named}


def test_dropout_ratio_is_checked():
    with pytest.raises(ValueError):
        models.get_model('mlp', 10, dropout=1.0)
