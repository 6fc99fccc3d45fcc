"""The package's public names keep one meaning each."""
import importlib
import pkgutil

import chainer_vogn
from chainer_vogn import run_folder


def test_predict_is_the_function_after_importing_every_module():
    """No module of the package is named like a public function: a
    command-line module ``chainer_vogn.predict`` replaced the function of
    that name as soon as anything imported it."""
    names = [module.name for module in pkgutil.walk_packages(
        chainer_vogn.__path__, 'chainer_vogn.')]
    assert 'chainer_vogn.commands' in names
    for name in names:
        importlib.import_module(name)
    assert chainer_vogn.predict is run_folder.predict
    assert callable(chainer_vogn.predict)
