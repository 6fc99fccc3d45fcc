"""The contract of an optimizer that learns a posterior over the weights.

train.py, evaluate.py, the checkpoints, config.json and
:func:`~chainer_vogn.posterior.save_posterior` know that an optimizer learns
a posterior only through :class:`PosteriorOptimizer`, as ChainerMN's code
knows a communicator only through ``CommunicatorBase``: an optimizer that
subclasses it and sits in the registry (:mod:`chainer_vogn.registry`) gets
its options, checks, records, checkpoints and predictive from there, with no
special case anywhere else (docs/adding_an_optimizer.md).
"""
import abc
import collections

from chainer import optimizer


class Hyperparameter(collections.namedtuple(
        'Hyperparameter', ['name', 'default', 'type', 'check', 'rule',
                           'help'])):
    """One hyperparameter of an optimizer, declared once.

    ``name`` is the keyword of the optimizer and the option of train.py
    (``--name-with-dashes``); ``default`` its value when not given; ``type``
    float, int or bool (a bool that defaults to True is turned off with
    ``--no-name``); ``check(value)`` is true for the values ``rule``
    describes ('in [0, 1)'); ``help`` says what it is, for --help (for a
    bool defaulting to True: what ``--no-name`` turns off).
    """


class HyperparameterError(ValueError):
    """A hyperparameter out of its range; ``name`` is the one rejected."""

    def __init__(self, name, message):
        super(HyperparameterError, self).__init__(message)
        self.name = name


def default_hyperparam(hyperparameters):
    """A ``chainer.optimizer.Hyperparameter`` of the declared defaults (and
    ``dataset_size`` None), for an optimizer module's
    ``_default_hyperparam``."""
    hp = optimizer.Hyperparameter()
    hp.dataset_size = None
    for declared in hyperparameters:
        setattr(hp, declared.name, declared.default)
    return hp


class PosteriorOptimizer(optimizer.GradientMethod, metaclass=abc.ABCMeta):
    """A Chainer optimizer that learns a posterior q(w) over the weights of
    its target, whose mean the parameters hold outside :meth:`update`.

    Args:
        dataset_size (int): N, the number of training examples (whole set).
        **hyperparams: values of the declared :attr:`hyperparameters`; the
            others take their declared defaults.

    ``update(lossfun, *args)`` runs one whole step: the optimizer draws the
    weight samples itself, puts each into the parameters for ``lossfun``
    with :func:`chainer_vogn.posterior.sampled`, and leaves the new mean.
    A subclass declares :attr:`hyperparameters` and :attr:`label` and
    implements :meth:`posterior_std` and :meth:`derived`; its distributed
    form, which the registry builds, takes ``(comm, dataset_size,
    num_sample_groups=S, num_samples=K, seed=seed, **hyperparams)`` and sets
    :attr:`data_comm`.  Each declared hyperparameter is an attribute of the
    optimizer (a ``HyperparameterProxy``).
    """

    #: The optimizer's :class:`Hyperparameter` declarations.
    hyperparameters = ()
    #: The optimizer's name in messages ('VOGN').
    label = None
    #: How :meth:`derived` derives the values not given, for train.py's
    #: line that prints them.
    derived_help = ''
    #: The ChainerMN communicator the training data is scattered over: the
    #: ranks that share a weight sample.  Set by the distributed subclass.
    data_comm = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in ['dataset_size'] + [h.name for h in cls.hyperparameters]:
            if not hasattr(cls, name):
                setattr(cls, name, optimizer.HyperparameterProxy(name))

    def __init__(self, dataset_size, **hyperparams):
        super(PosteriorOptimizer, self).__init__()
        declared = {h.name: h for h in self.hyperparameters}
        unknown = sorted(set(hyperparams) - set(declared))
        if unknown:
            raise TypeError('{} has no hyperparameters {}; it has {}'.format(
                self.label, unknown, sorted(declared)))
        hp = self.hyperparam
        hp.dataset_size = dataset_size
        for name, h in declared.items():
            setattr(hp, name, hyperparams.get(name, h.default))
        self.check_hyperparameters(hp)

    @classmethod
    def hyperparameter(cls, name):
        """The :class:`Hyperparameter` declared as ``name``."""
        return next(h for h in cls.hyperparameters if h.name == name)

    @classmethod
    def invalid(cls, hp, name, rule):
        """The :class:`HyperparameterError` of ``hp.name`` against
        ``rule``."""
        return HyperparameterError(name, '{}: {} = {!r} is invalid: it must '
                                         'be {}'.format(
                                             cls.label, name,
                                             getattr(hp, name), rule))

    @classmethod
    def check_hyperparameters(cls, hp):
        """Raise :class:`HyperparameterError` naming the first of
        ``dataset_size`` and the declared hyperparameters of ``hp`` out of
        its range."""
        if hp.dataset_size is None or not hp.dataset_size > 0:
            raise cls.invalid(hp, 'dataset_size',
                              'the (positive) number of training examples')
        for h in cls.hyperparameters:
            if not h.check(getattr(hp, h.name)):
                raise cls.invalid(hp, h.name, h.rule)

    @abc.abstractmethod
    def posterior_std(self):
        """sigma of every parameter of the target, {name: array}: the
        posterior's std now (zeros for point estimates)."""

    @abc.abstractmethod
    def derived(self):
        """The hyperparameters whose values the optimizer derives when they
        are not given, as used: an ordered mapping {name: value}.  train.py
        prints them in one line and config.json records each as
        ``<name>_used``."""
