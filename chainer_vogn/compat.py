"""Make Chainer 7.8.1 import on NumPy 2, Python 3.12+ and setuptools 82+.

Chainer 7.8.1 (the last release) touches three things that newer stacks removed:

* ``numpy.sctypes`` (removed in NumPy 2.0), read at import time by
  ``chainer.functions.array.as_strided``;
* ``numpy.distutils`` (gone from Python 3.12 builds of NumPy), imported by
  ``chainer._environment_check`` for a macOS-only BLAS check;
* ``pkg_resources`` (removed in setuptools 82), imported by the same module to
  check optional dependencies.

This module restores exactly those names, and only where they are missing, so
on an old stack it changes nothing.  ``numpy.sctypes`` stays (Chainer reads it
again at run time); the two stand-in modules are registered only while Chainer
imports and removed afterwards, so no other library ever sees them.  Import
:mod:`chainer_vogn` (or this module) before ``import chainer``.
"""
import importlib
import importlib.metadata
import platform
import re
import sys
import types

import numpy

#: What this module had to restore on this stack (empty on an old stack).
applied = []


def _sctypes():
    groups = {
        'int': ['int8', 'int16', 'int32', 'int64'],
        'uint': ['uint8', 'uint16', 'uint32', 'uint64'],
        'float': ['float16', 'float32', 'float64', 'longdouble'],
        'complex': ['complex64', 'complex128', 'clongdouble'],
        'others': ['bool_', 'object_', 'bytes_', 'str_', 'void'],
    }
    return {key: [getattr(numpy, name) for name in names]
            for key, names in groups.items()}


def _module_missing(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return True
    return False


def _numpy_distutils_stand_in():
    """``numpy.distutils.system_info.get_info`` answering 'nothing known'."""
    package = types.ModuleType('numpy.distutils')
    system_info = types.ModuleType('numpy.distutils.system_info')
    system_info.get_info = lambda name, notfound_action=0: {}
    package.system_info = system_info
    return {'numpy.distutils': package,
            'numpy.distutils.system_info': system_info}


class _DistributionNotFound(Exception):
    pass


class _VersionConflict(Exception):
    pass


def _require(requirement):
    """Report whether the distribution named by ``requirement`` is installed.

    Only presence is checked: Chainer uses this to warn about optional
    packages, and a version mismatch warning is not worth a dependency.
    """
    name = re.split(r'[<>=!~ \[;]', str(requirement), maxsplit=1)[0]
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        raise _DistributionNotFound(name)
    return []


def _get_distribution(name):
    return types.SimpleNamespace(
        project_name=name, version=importlib.metadata.version(name))


def _pkg_resources_stand_in():
    module = types.ModuleType('pkg_resources')
    module.DistributionNotFound = _DistributionNotFound
    module.VersionConflict = _VersionConflict
    module.ResolutionError = Exception
    module.require = _require
    module.get_distribution = _get_distribution
    return {'pkg_resources': module}


def _import_chainer():
    if 'chainer' in sys.modules:
        return sys.modules['chainer']
    if 'sctypes' not in vars(numpy):
        try:
            numpy.sctypes
        except AttributeError:
            numpy.sctypes = _sctypes()
            applied.append('numpy.sctypes')
    stand_ins = {}
    if _module_missing('numpy.distutils.system_info'):
        stand_ins.update(_numpy_distutils_stand_in())
        applied.append('numpy.distutils')
    if _module_missing('pkg_resources'):
        stand_ins.update(_pkg_resources_stand_in())
        applied.append('pkg_resources')
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module('chainer')
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)


chainer = _import_chainer()


def versions():
    """The versions of Python and the libraries that produce a result."""
    info = {'python': platform.python_version(), 'numpy': numpy.__version__,
            'chainer': chainer.__version__}
    try:
        import cupy
        info['cupy'] = cupy.__version__
    except ImportError:
        pass
    return info
