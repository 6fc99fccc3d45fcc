"""chainer_vogn.compat: Chainer imports on both stacks, nothing leaks."""
import subprocess
import sys

import numpy

from chainer_vogn import compat


def _run(code):
    return subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=120)


def test_chainer_imports_and_trains_a_step():
    import chainer
    import chainer.links as L
    assert chainer.__version__ == '7.8.1'
    model = L.Classifier(L.Linear(3, 2))
    opt = chainer.optimizers.SGD(lr=0.1)
    opt.setup(model)
    x = numpy.random.RandomState(0).rand(8, 3).astype(numpy.float32)
    t = numpy.arange(8, dtype=numpy.int32) % 2
    before = model.predictor.W.array.copy()
    opt.update(model, x, t)
    assert not numpy.array_equal(before, model.predictor.W.array)


def test_applies_exactly_what_this_stack_lacks():
    numpy2 = int(numpy.__version__.split('.')[0]) >= 2
    assert ('numpy.sctypes' in compat.applied) == numpy2
    if not compat.applied:
        return
    # Every name restored was really missing: a fresh interpreter that
    # imports chainer directly fails on this stack.
    result = _run('import chainer')
    assert result.returncode != 0


def test_plain_import_untouched_on_old_stack():
    """On a stack where chainer imports unaided, compat changes nothing."""
    result = _run('import chainer, numpy; '
                  'had = "sctypes" in vars(numpy); '
                  'import chainer_vogn.compat as c; '
                  'assert c.applied == [], c.applied; '
                  'assert ("sctypes" in vars(numpy)) == had')
    if compat.applied:
        assert result.returncode != 0  # chainer alone cannot import here
    else:
        assert result.returncode == 0, result.stderr


def test_stand_in_modules_do_not_leak():
    result = _run('import sys, chainer_vogn, chainer.functions; '
                  'import importlib.util as u; '
                  'print(u.find_spec("pkg_resources") is not None, '
                  '"pkg_resources" in sys.modules)')
    assert result.returncode == 0, result.stderr
    installed, loaded = result.stdout.split()
    # pkg_resources is loaded only if it really is installed.
    assert installed == 'True' or loaded == 'False'


def test_as_strided_backward_uses_sctypes():
    """chainer reads numpy.sctypes at run time too (as_strided backward)."""
    import chainer
    import chainer.functions as F
    x = chainer.Variable(numpy.arange(6, dtype=numpy.float32))
    y = F.as_strided(x, (2, 2), (2, 1))  # strides in elements
    F.sum(y).backward()
    numpy.testing.assert_array_equal(x.grad, [1, 1, 1, 1, 0, 0])
