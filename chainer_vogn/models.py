"""Classifiers returning logits, made of the links VOGN supports.

VOGN's per-example curvature hook knows three parameterised links:
``L.Linear``, ``L.Convolution2D`` and ``L.BatchNormalization``.  The networks
here use only those, plus parameter-free functions (relu, pooling, dropout,
reshape), so every parameter gets a curvature estimate.

``dropout > 0`` gives the MC-dropout variant: dropout before every fully
connected layer, active while training and also at test time under
``chainer.using_config('mc_dropout', True)``; with ``train=False`` in that
configuration BatchNormalization keeps using its running statistics.
"""
from chainer_vogn import compat  # NOQA: must run before chainer is imported
import chainer
import chainer.functions as F
import chainer.links as L


def dropout_active():
    """Whether dropout is on: in training, or for MC-dropout prediction."""
    return bool(chainer.config.train or
                getattr(chainer.config, 'mc_dropout', False))


def _dropout(x, ratio):
    if ratio == 0 or not dropout_active():
        return x
    # F.dropout is the identity whenever config.train is False.
    with chainer.using_config('train', True):
        return F.dropout(x, ratio)


def _max_pool(x):
    return F.max_pooling_2d(x, 2, cover_all=False)


class MLP(chainer.Chain):
    """Fully connected ReLU network on flattened images of any size."""

    arch = 'mlp'

    def __init__(self, n_classes, hidden=(256, 256), dropout=0.0):
        super(MLP, self).__init__()
        self.dropout = dropout
        with self.init_scope():
            self.layers = chainer.ChainList(
                *[L.Linear(None, n) for n in tuple(hidden) + (n_classes,)])

    def __call__(self, x):
        h = F.reshape(x, (len(x), -1))
        for i, layer in enumerate(self.layers):
            if i:
                h = F.relu(h)
            h = layer(_dropout(h, self.dropout))
        return h


class LeNet5(chainer.Chain):
    """LeNet-5 for 32x32 colour images, as in Osawa et al. (2019)."""

    arch = 'lenet5'

    def __init__(self, n_classes, in_channels=3, dropout=0.0):
        super(LeNet5, self).__init__()
        self.dropout = dropout
        with self.init_scope():
            self.conv1 = L.Convolution2D(in_channels, 6, 5)
            self.conv2 = L.Convolution2D(6, 16, 5)
            self.fc1 = L.Linear(None, 120)
            self.fc2 = L.Linear(120, 84)
            self.fc3 = L.Linear(84, n_classes)

    def __call__(self, x):
        h = _max_pool(F.relu(self.conv1(x)))
        h = _max_pool(F.relu(self.conv2(h)))
        h = F.relu(self.fc1(_dropout(h, self.dropout)))
        h = F.relu(self.fc2(_dropout(h, self.dropout)))
        return self.fc3(_dropout(h, self.dropout))


class AlexNet(chainer.Chain):
    """The CIFAR-size AlexNet used by Osawa et al. (2019), without BN.

    Five convolutions (64, 192, 384, 256, 256 channels; an 11x11 stride-4
    first layer, then 5x5 and three 3x3) with 2x2 max pooling after the
    first, the second and the last, and a single fully connected layer, as
    in the network of that paper (from the pytorch-classification CIFAR
    models): on 32x32 input the features are 256 values, so no wide
    fully connected layers are added.
    """

    arch = 'alexnet'

    def __init__(self, n_classes, in_channels=3, dropout=0.0):
        super(AlexNet, self).__init__()
        self.dropout = dropout
        with self.init_scope():
            self.conv1 = L.Convolution2D(in_channels, 64, 11, stride=4, pad=5)
            self.conv2 = L.Convolution2D(64, 192, 5, pad=2)
            self.conv3 = L.Convolution2D(192, 384, 3, pad=1)
            self.conv4 = L.Convolution2D(384, 256, 3, pad=1)
            self.conv5 = L.Convolution2D(256, 256, 3, pad=1)
            self.fc = L.Linear(None, n_classes)

    def __call__(self, x):
        h = _max_pool(F.relu(self.conv1(x)))
        h = _max_pool(F.relu(self.conv2(h)))
        h = F.relu(self.conv3(h))
        h = F.relu(self.conv4(h))
        h = _max_pool(F.relu(self.conv5(h)))
        return self.fc(_dropout(h, self.dropout))


class BasicBlock(chainer.Chain):
    """Two 3x3 convolutions with BN and an identity or 1x1 shortcut."""

    def __init__(self, in_channels, out_channels, stride=1):
        super(BasicBlock, self).__init__()
        with self.init_scope():
            self.conv1 = L.Convolution2D(
                in_channels, out_channels, 3, stride, 1, nobias=True)
            self.bn1 = L.BatchNormalization(out_channels)
            self.conv2 = L.Convolution2D(
                out_channels, out_channels, 3, 1, 1, nobias=True)
            self.bn2 = L.BatchNormalization(out_channels)
            if stride != 1 or in_channels != out_channels:
                self.shortcut_conv = L.Convolution2D(
                    in_channels, out_channels, 1, stride, 0, nobias=True)
                self.shortcut_bn = L.BatchNormalization(out_channels)

    def __call__(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        if hasattr(self, 'shortcut_conv'):
            x = self.shortcut_bn(self.shortcut_conv(x))
        return F.relu(h + x)


class ResNet18(chainer.Chain):
    """ResNet-18 for CIFAR: 3x3 stem without max pooling, four stages."""

    arch = 'resnet18'

    def __init__(self, n_classes, in_channels=3, dropout=0.0):
        super(ResNet18, self).__init__()
        self.dropout = dropout
        with self.init_scope():
            self.conv1 = L.Convolution2D(in_channels, 64, 3, 1, 1, nobias=True)
            self.bn1 = L.BatchNormalization(64)
            blocks = []
            channels = 64
            for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                blocks.append(BasicBlock(channels, width, stride))
                blocks.append(BasicBlock(width, width))
                channels = width
            self.blocks = chainer.ChainList(*blocks)
            self.fc = L.Linear(512, n_classes)

    def __call__(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        for block in self.blocks:
            h = block(h)
        h = F.average_pooling_2d(h, h.shape[2:])
        h = F.reshape(h, (len(h), -1))
        return self.fc(_dropout(h, self.dropout))


_ARCHS = {
    'mlp': MLP,
    'lenet5': LeNet5,
    'alexnet': AlexNet,
    'resnet18': ResNet18,
}

#: Names accepted by :func:`get_model`.
ARCHS = tuple(_ARCHS)


def get_model(arch, n_classes, in_channels=3, dropout=0.0):
    """Builds the classifier ``arch`` (one of :data:`ARCHS`).

    ``in_channels`` is ignored by ``mlp``, whose first layer sizes itself on
    the first batch.  The convolutional networks expect images of at least
    32x32.  ``dropout`` is the MC-dropout ratio (0 for none).
    """
    if arch not in _ARCHS:
        raise ValueError('unknown architecture {!r}; choose one of {}'.format(
            arch, ', '.join(ARCHS)))
    if not 0 <= dropout < 1:
        raise ValueError('dropout must be in [0, 1), got {}'.format(dropout))
    if arch == 'mlp':
        return MLP(n_classes, dropout=dropout)
    return _ARCHS[arch](n_classes, in_channels=in_channels, dropout=dropout)
