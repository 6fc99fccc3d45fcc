"""Per-example squared gradients in the same backward pass, as a FunctionHook.

VOGN needs, for every parameter, h = (1/B) sum_i (grad l_i)^2: the mean of the
squared gradients of the B per-example losses.  Backpropagating the minibatch
MEAN loss gives each layer the output gradient gy, whose row i is
(1/B) d l_i / d y_i; together with the layer's input x this is enough to form
every example's own weight gradient without a backward pass per example.
Since grad l_i = B * (the share of example i in the mean-loss gradient),

    h = (1/B) sum_i (B a_i)^2 = B sum_i a_i^2,

where a_i is that share.  The rules for a_i, layer by layer, are the ones of
``docs/algorithm.md`` (after the project spec):

* Linear: a_i = gy_i x_i^T, so sum_i a_i^2 = (gy^2)^T (x^2), one matmul.
* Convolution2D: a_i = gy_i (O x HW) times im2col(x_i)^T (HW x C kh kw),
  per group, computed in chunks of the batch to bound memory.
* BatchNormalization (training mode, batch statistics held constant):
  a_i = sum_hw(x_hat_i * gy_i) for gamma and sum_hw(gy_i) for beta.
"""
import chainer
from chainer import backend
from chainer.functions.connection import convolution_2d
from chainer.functions.connection import linear
from chainer.functions.normalization import batch_normalization
from chainer.utils import conv

#: Elements of one chunk of per-example convolution gradients (and of its
#: im2col buffer); 2**24 float32 values are 64 MiB.
CONV_CHUNK_ELEMENTS = 2 ** 24


def _linear(x, gy, B):
    xp = backend.get_array_module(x)
    x = x.reshape(len(x), -1)
    gy2 = gy * gy
    return B * xp.matmul(gy2.T, x * x), B * gy2.sum(axis=0)


def _conv_chunk_size(batch, out_channels, group_in, khw, out_hw):
    per_example = max(out_channels * group_in * khw, group_in * khw * out_hw)
    return max(1, min(batch, CONV_CHUNK_ELEMENTS // per_example))


def _convolution_2d(func, x, W, gy, B):
    xp = backend.get_array_module(x)
    out_c, group_in, kh, kw = W.shape
    groups = func.groups
    n, _, out_h, out_w = gy.shape
    rows, cols = out_c // groups, group_in * kh * kw
    chunk = _conv_chunk_size(n, out_c, group_in, kh * kw, out_h * out_w)
    # One buffer for every chunk's per-example gradients, squared in place.
    buf = xp.empty((chunk, groups, rows, cols), dtype=W.dtype)
    gW = xp.zeros((groups, rows, cols), dtype=W.dtype)
    for start in range(0, n, chunk):
        xs, gys = x[start:start + chunk], gy[start:start + chunk]
        b = len(xs)
        col = conv.im2col(xs, kh, kw, func.sy, func.sx, func.ph, func.pw,
                          cover_all=func.cover_all, dy=func.dy, dx=func.dx)
        # (b, C, kh, kw, oh, ow) -> (b, groups, C/groups*kh*kw, oh*ow)
        col = col.reshape(b, groups, cols, out_h * out_w)
        g = gys.reshape(b, groups, rows, out_h * out_w)
        per_example = xp.matmul(g, col.transpose(0, 1, 3, 2), out=buf[:b])
        gW += xp.square(per_example, out=per_example).sum(axis=0)
    gb = gy.sum(axis=(2, 3))
    return B * gW.reshape(W.shape), B * (gb * gb).sum(axis=0)


def _batch_normalization(func, x, gy, B):
    if 0 not in func.axis:
        raise ValueError(
            'BatchNormalization without the batch axis among its '
            'normalised axes ({}) has no per-example rule'.format(func.axis))
    # The batch statistics of the forward pass, as Chainer's backward uses.
    x_hat = x - func.mean[func.expander]
    x_hat *= func.inv_std[func.expander]
    inner = tuple(a for a in func.axis if a != 0)
    a_gamma = (x_hat * gy).sum(axis=inner)
    a_beta = gy.sum(axis=inner)
    return B * (a_gamma * a_gamma).sum(axis=0), B * (a_beta * a_beta).sum(axis=0)


class SquaredGradientHook(chainer.FunctionHook):
    """Collects B * sum_i a_i^2 (see the module docstring) for given parameters.

    Use it as a context manager around ``loss.backward()`` of a MEAN loss:
    afterwards ``hook.squared[name]`` holds h for every tracked parameter that
    received a gradient.  Parameters are tracked by identity, so the model's
    parameters must be the ones given here.
    """

    name = 'SquaredGradientHook'

    def __init__(self, named_params):
        self._names = {id(param): name for name, param in named_params}
        self.squared = {}

    def added(self, function=None):
        self.squared = {}

    def _tracked(self, node):
        param = node.get_variable_or_none()
        if param is None:
            return None
        return self._names.get(id(param))

    def _store(self, name, value):
        if name in self.squared:
            raise ValueError(
                'parameter {} is used more than once in one forward pass; '
                'its per-example squared gradient is not the sum of the '
                'uses, so VOGN does not support shared weights'.format(name))
        self.squared[name] = value

    def backward_postprocess(self, function, in_data, out_grad):
        gy = out_grad[0]
        if gy is None:
            return
        names = [self._tracked(node) for node in function.inputs]
        if not any(names[1:]):
            return
        # A float: NumPy 1's value-based casting makes an int B >= 2**16
        # times a float32 array float64, and h must keep the parameter's
        # dtype.
        B = float(len(gy))
        if isinstance(function, linear.LinearFunction):
            values = _linear(in_data[0], gy, B)
        elif isinstance(function, convolution_2d.Convolution2DFunction):
            values = _convolution_2d(function, in_data[0], in_data[1], gy, B)
        elif isinstance(function, batch_normalization.BatchNormalization):
            values = _batch_normalization(function, in_data[0], gy, B)
        elif isinstance(function,
                        batch_normalization.FixedBatchNormalization):
            raise ValueError(
                'parameter {} is used by BatchNormalization in test mode '
                '(chainer.config.train is False) during a VOGN update; run '
                'updates with chainer.config.train = True'.format(
                    names[1] or names[2]))
        else:
            return  # its parameters are reported missing by the optimizer
        for name, value in zip(names[1:], values):
            if name is not None:
                self._store(name, value)
