"""The options of a train.py run, from the command line, a JSON/YAML
``--config`` file, a run's config.json or Python, converted and checked by
one :class:`RunConfig`; and the parser style train.py, evaluate.py and
predict.py share (:class:`ArgumentParser`)."""
import argparse
import collections
import dataclasses
import json
import math
import sys
from typing import List
from typing import Optional

from chainer.optimizers import momentum_sgd as momentum_sgd_module

from chainer_vogn import datasets
from chainer_vogn import models
from chainer_vogn import registry
from chainer_vogn.posterior_optimizer import HyperparameterError
from chainer_vogn.registry import OPTIMIZERS

COMMUNICATORS = ('naive', 'flat', 'pure_nccl')


class ConfigError(ValueError):
    """An option with a bad value, type or combination.

    The message names the option; ``option`` is its name as a field of
    :class:`RunConfig`, so that callers can say where its value came from.
    """

    def __init__(self, option, message):
        super(ConfigError, self).__init__(message)
        self.option = option


def _integer(value):
    if isinstance(value, str):
        value = value.strip()
        if value.lstrip('+-').isdigit():
            return int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError('an integer')


def _number(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise TypeError('a number')


def _text(value):
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # YAML reads --classes 3 or --out 2024 as ints
    raise TypeError('a string')


def _flag(value):
    if isinstance(value, bool):
        return value
    raise TypeError('true or false')


def _epochs(value):
    """Epochs as a list of integers, from [80, 120], '80,120' or 80."""
    if isinstance(value, str):
        value = [v for v in value.split(',') if v.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    try:
        return [_integer(v) for v in value]
    except TypeError:
        raise TypeError('comma-separated epochs such as 80,120')


def _option(default, convert, check=None, rule=None, choices=None):
    """A :class:`RunConfig` field: its default, the conversion of a given
    value (a string from the command line or a value from a file), and the
    range ``check`` that ``rule`` describes."""
    if isinstance(default, list):
        kwargs = {'default_factory': lambda: list(default)}
    else:
        kwargs = {'default': default}
    return dataclasses.field(metadata={
        'convert': convert, 'check': check, 'rule': rule,
        'choices': choices}, **kwargs)


def _positive():
    return dict(convert=_integer, check=lambda v: v >= 1,
                rule='an integer >= 1')


def _in_unit_interval():
    return dict(convert=_number, check=lambda v: 0 <= v < 1,
                rule='a number in [0, 1)')


def _not_negative():
    return dict(convert=_number, check=lambda v: v >= 0, rule='a number >= 0')


def _greater_than_zero():
    return dict(convert=_number, check=lambda v: v > 0, rule='a number > 0')


@dataclasses.dataclass
class _GeneralOptions(object):
    """The options of every run; :class:`RunConfig` adds the hyperparameters
    the registered optimizers declare."""

    config: Optional[str] = _option(None, _text)
    # Model and data
    optimizer: str = _option('vogn', _text, choices=OPTIMIZERS)
    arch: str = _option('mlp', _text, choices=models.ARCHS)
    dataset: str = _option('digits', _text, choices=datasets.DATASETS)
    data_dir: Optional[str] = _option(None, _text)
    classes: Optional[str] = _option(None, _text)
    allow_download: bool = _option(False, _flag)
    dropout: Optional[float] = _option(None, **_in_unit_interval())
    augment: bool = _option(False, _flag)
    train_size: Optional[int] = _option(None, **_positive())
    label_noise: float = _option(0.0, _number, check=lambda v: 0 <= v < 1,
                                 rule='a fraction in [0, 1)')
    val_split: float = _option(0.0, _number, check=lambda v: 0 <= v < 1,
                               rule='a fraction in [0, 1)')
    # Training
    samples: int = _option(1, **_positive())
    mc: int = _option(1, **_positive())
    batchsize: int = _option(32, **_positive())
    epochs: int = _option(10, **_positive())
    lr: Optional[float] = _option(None, **_greater_than_zero())
    lr_milestones: List[int] = _option(
        [], _epochs, check=lambda v: v == sorted(set(v)) and min(v + [1]) >= 1,
        rule='increasing positive epochs such as 80,120')
    lr_decay: float = _option(0.1, **_greater_than_zero())
    weight_decay: Optional[float] = _option(None, **_not_negative())
    momentum: float = _option(momentum_sgd_module._default_hyperparam.momentum,
                              **_in_unit_interval())
    seed: int = _option(0, _integer, check=lambda v: 0 <= v < 2 ** 32,
                        rule='an integer in [0, 2**32)')
    # Devices, output and resuming
    device: int = _option(-1, _integer, check=lambda v: v >= -1,
                          rule='-1 (the CPU) or a GPU number >= 0')
    communicator: str = _option('naive', _text, choices=COMMUNICATORS)
    out: str = _option('result', _text, check=bool,
                       rule='a folder path, not empty')
    resume: bool = _option(False, _flag)
    snapshot_interval: int = _option(1, **_positive())
    eval_batchsize: int = _option(256, **_positive())
    val_samples: int = _option(10, _integer, check=lambda v: v >= 0,
                               rule='an integer >= 0')
    val_interval: int = _option(1, **_positive())
    progress: bool = _option(True, _flag)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            setattr(self, field.name, _checked(field, getattr(self,
                                                              field.name)))
        spec = OPTIMIZERS[self.optimizer]
        if self.lr is None:
            self.lr = spec.default_lr
        if self.dropout is None:
            self.dropout = spec.default_dropout
        if self.weight_decay is None:
            self.weight_decay = _weight_decay_default(spec)
        for h in _declared(spec):
            if h.name in HYPERPARAMETER_OPTIONS and \
                    getattr(self, h.name) is None:
                setattr(self, h.name, h.default)
        self._check_combinations(spec)

    def foreign_options(self):
        """The hyperparameter options that this run's optimizer does not
        take: they do not decide its results."""
        own = {h.name for h in _declared(OPTIMIZERS[self.optimizer])}
        return set(HYPERPARAMETER_OPTIONS) - own

    def _check_combinations(self, spec):
        weight_samplers = [name for name, other in OPTIMIZERS.items()
                           if other.sampling == 'weights']
        for name in ('samples', 'mc'):
            if getattr(self, name) != 1 and spec.sampling != 'weights':
                raise ConfigError(name, (
                    '{}: {} applies to {} only: optimizer {} is plain data '
                    'parallel (use 1)').format(
                        name, getattr(self, name), ' or '.join(weight_samplers),
                        self.optimizer))
        if spec.sampling == 'dropout' and self.dropout <= 0:
            raise ConfigError('dropout', (
                'dropout: optimizer {} needs dropout > 0, got {}').format(
                    self.optimizer, self.dropout))
        if self.classes is not None:
            try:
                classes = datasets.parse_class_range(self.classes)
            except ValueError as e:
                raise ConfigError('classes', 'classes: {}'.format(e))
            if len(classes) < 2:
                raise ConfigError('classes', (
                    'classes: {!r} is one class; a classifier needs at least '
                    'two, such as 0-4').format(self.classes))
        if self.communicator != 'naive' and self.device < 0:
            raise ConfigError('communicator', (
                'communicator: {} needs GPUs; use naive with device -1 (the '
                'CPU)').format(self.communicator))
        if spec.posterior is not None:
            # A value left None is checked as the default the optimizer
            # takes for it (VOGN's lr, which it scales).
            values = {h.name: h.default if getattr(self, h.name) is None
                      else getattr(self, h.name) for h in _declared(spec)}
            try:
                spec.posterior.check_hyperparameters(argparse.Namespace(
                    dataset_size=1, **values))
            except HyperparameterError as e:
                raise ConfigError(e.name, str(e))

    @classmethod
    def from_record(cls, record):
        """The options recorded in a run's config.json (a dict); the record's
        other entries (versions, layout, results) are left out."""
        if not isinstance(record, dict):
            raise ConfigError(None, 'expected a mapping of option names to '
                              'values, got {}'.format(type(record).__name__))
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


def general_defaults():
    """{option: default} of the options every run has, whatever its
    optimizer: what a record written before an option existed ran with."""
    return {field.name: field.default_factory()
            if field.default is dataclasses.MISSING else field.default
            for field in dataclasses.fields(_GeneralOptions)}


def _weight_decay_default(spec):
    """--weight-decay when not given: the default of an optimizer that
    declares it as a hyperparameter, else 0 (no decay)."""
    return next((h.default for h in _declared(spec)
                 if h.name == 'weight_decay'), 0.0)


def _declared(spec):
    """The hyperparameters the optimizer of ``spec`` declares."""
    return spec.posterior.hyperparameters if spec.posterior else ()


#: {option: [(optimizer, Hyperparameter), ...]} of the hyperparameters the
#: registered optimizers declare, except options every run has (lr).
HYPERPARAMETER_OPTIONS = collections.OrderedDict(
    (name, declared) for name, declared in
    registry.declared_hyperparameters().items()
    if name not in {f.name for f in dataclasses.fields(_GeneralOptions)})

_CONVERSIONS = {float: _number, int: _integer, bool: _flag}

RunConfig = dataclasses.make_dataclass(
    'RunConfig', [(name, Optional[declared[0][1].type],
                   _option(None, _CONVERSIONS[declared[0][1].type]))
                  for name, declared in HYPERPARAMETER_OPTIONS.items()],
    bases=(_GeneralOptions,), namespace={'__module__': __name__})
RunConfig.__doc__ = """The options of a train.py run, converted, checked and
completed.

Build it from Python (``RunConfig(optimizer='adam', epochs=5)``), from
train.py's command line and --config file (:func:`parse_args`) or from a
run's config.json (:meth:`from_record`): the values go through the same
conversions and checks, and a bad one raises :class:`ConfigError`.  ``lr``
and ``dropout`` left as None take the optimizer's defaults (see
:data:`~chainer_vogn.registry.OPTIMIZERS`).  The fields after the general
options are the hyperparameters the optimizers declare
(:data:`HYPERPARAMETER_OPTIONS`): None, unless given, for optimizers that do
not take them, and the run's optimizer's default for those it takes; its own
``check_hyperparameters`` checks their ranges.  The meaning of each field is
the help of its option in :func:`build_parser`.
"""


def _checked(field, value):
    """``value`` of ``field`` converted and checked; ConfigError if bad."""
    meta = field.metadata
    if value is None and field.default is None:
        return None
    try:
        converted = meta['convert'](value)
    except TypeError as e:
        raise ConfigError(field.name, '{}: {!r} is invalid; it must be '
                          '{}'.format(field.name, value, meta['rule'] or e))
    if isinstance(converted, float) and not math.isfinite(converted):
        raise ConfigError(field.name, '{}: {!r} is invalid; it must be a '
                          'finite number'.format(field.name, converted))
    if meta['choices'] and converted not in meta['choices']:
        raise ConfigError(field.name, '{}: {!r} is not one of {}'.format(
            field.name, value, ', '.join(meta['choices'])))
    if meta['check'] and not meta['check'](converted):
        raise ConfigError(field.name, '{}: {!r} is invalid; it must be '
                          '{}'.format(field.name, converted, meta['rule']))
    return converted


def read_config(path):
    """The options in a JSON (.json) or YAML (.yaml/.yml) file, as a dict
    with option names spelled with underscores; ConfigError, naming the
    file, if it is missing, unreadable or not a mapping."""
    def bad(problem):
        return ConfigError('config', '--config {}: {}'.format(path, problem))

    try:
        with open(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise bad(getattr(e, 'strerror', None) or e)
    if path.endswith(('.yaml', '.yml')):
        import yaml
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, 'problem_mark', None)
            raise bad('not valid YAML{}: {}'.format(
                '' if mark is None else ' (line {}, column {})'.format(
                    mark.line + 1, mark.column + 1),
                getattr(e, 'problem', None) or e))
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise bad('not valid JSON: {}'.format(e))
    if not isinstance(data, dict):
        raise bad('expected a mapping of option names to values, got '
                  '{}'.format(type(data).__name__))
    return {str(key).replace('-', '_'): value for key, value in data.items()}


def at_least(minimum, what=None):
    """An argparse type: an integer >= ``minimum`` (``what`` names it)."""
    def parse(text):
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError('{}must be >= {}, got {}'.format(
                what + ' ' if what else '', minimum, value))
        return value
    parse.__name__ = 'integer'  # argparse: "invalid integer value: '1.5'"
    return parse


def folder(text):
    """An argparse type: a folder path, which cannot be empty."""
    if not text:
        raise argparse.ArgumentTypeError(
            "'' is invalid; it must be a folder path, not empty")
    return text


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it has none (None, an empty list)
    or is a --no-... switch, whose help says what it turns off."""

    def _get_help_string(self, action):
        if action.default in (None, [], argparse.SUPPRESS) or \
                (action.nargs == 0 and action.default is True):
            return action.help
        return super(HelpFormatter, self)._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with defaults in --help and a one-line error
    (``prog: error: ...``, exit status 2) instead of usage and error."""

    def __init__(self, **kwargs):
        kwargs.setdefault('formatter_class', HelpFormatter)
        super(ArgumentParser, self).__init__(**kwargs)

    def error(self, message):
        self.exit(2, '{}: error: {}\n'.format(self.prog, message))


def build_parser(prog='train.py'):
    """train.py's parser, named ``prog`` in its usage and errors.  It gives
    the command line's values as strings; :func:`parse_args` converts and
    checks them with :class:`RunConfig`."""
    default = {field.name: field.default if field.default is not
               dataclasses.MISSING else field.default_factory()
               for field in dataclasses.fields(RunConfig)}

    def choices(name):
        return '{' + ','.join(RunConfig.__dataclass_fields__[name].metadata[
            'choices']) + '}'

    weight_samplers = ' and '.join(spec.label for spec in OPTIMIZERS.values()
                                   if spec.sampling == 'weights')

    p = ArgumentParser(
        prog=prog,
        description='Train a classifier with VOGN, IVON or a baseline on '
                    'one or many processes: mpiexec -n P python train.py --samples S '
                    'splits the P processes into S Monte Carlo sample groups '
                    'of P/S data shards each.')

    def add(group, name, help, **kwargs):
        dest = name.lstrip('-').replace('-', '_')
        if name.startswith('--no-'):
            kwargs.update(action='store_false', dest=dest[3:])
        elif isinstance(default.get(dest), bool):
            kwargs.update(action='store_true')
        group.add_argument(name, help=help,
                           default=default[kwargs.get('dest', dest)],
                           **kwargs)

    add(p, '--config', 'JSON or YAML file of options, such as '
        'configs/cifar10_lenet5_vogn.yaml; its keys are option names '
        '(prior-precision or prior_precision); the command line wins '
        '(default: none)', metavar='FILE')
    g = p.add_argument_group('model and data')
    add(g, '--optimizer', 'vogn, or a baseline: adam, mcdropout (Adam with '
        'dropout, sampled with dropout on) or sgd (momentum SGD)',
        metavar=choices('optimizer'))
    add(g, '--arch', 'network architecture', metavar=choices('arch'))
    add(g, '--dataset', 'data set (digits is bundled; the others are read '
        'from --data-dir)', metavar=choices('dataset'))
    add(g, '--data-dir', 'folder with the official data set files (default: '
        './data)')
    add(g, '--classes', 'train on these classes only, e.g. 0-4 (relabelled '
        '0..k-1), holding the rest out as out-of-distribution data for '
        'evaluate.py --ood holdout:5-9 (default: all classes)',
        metavar='LIST')
    add(g, '--allow-download', 'let Chainer download MNIST when it is not '
        'cached')
    add(g, '--dropout', 'dropout rate before fully connected layers '
        '(default: {})'.format(', '.join(
            '{} {}'.format(name, spec.default_dropout)
            for name, spec in OPTIMIZERS.items())))
    add(g, '--augment', 'random crop (pad 4) and horizontal flip')
    add(g, '--train-size', 'train on a fixed subset of this many training '
        'images, each class keeping its share (picked by --seed) (default: '
        'all)', metavar='N')
    add(g, '--label-noise', 'fraction of the training labels replaced by '
        'another class, uniformly (picked by --seed); the test labels stay '
        'true', metavar='P')
    add(g, '--val-split', 'fraction of the training images held out, '
        'stratified, as the validation set of the log and plots; 0: the log '
        'shows the test set (evaluate.py always uses the test set)',
        metavar='F')
    g = p.add_argument_group('training')
    add(g, '--samples', 'sample groups across processes ({} only); the '
        'number of processes must be a multiple of S'.format(
            weight_samplers), metavar='S')
    add(g, '--mc', 'Monte Carlo weight samples per process per step ({} '
        'only)'.format(weight_samplers), metavar='K')
    add(g, '--batchsize', 'minibatch size PER PROCESS (ChainerMN '
        'convention)')
    add(g, '--epochs', 'epochs to train (in all, also when resuming)')
    add(g, '--lr', 'learning rate (Adam\'s alpha; default: {})'.format(
        ', '.join('{} {}'.format(name, spec.default_lr or '{} x the data '
                                 'shards D'.format(spec.posterior.hyperparameter(
                                     'lr').default))
                  for name, spec in OPTIMIZERS.items())))
    add(g, '--lr-milestones', 'epochs at which the learning rate is '
        'multiplied by --lr-decay (default: none)', metavar='E1,E2')
    add(g, '--lr-decay', 'factor applied to the learning rate at each '
        'milestone')
    add(g, '--weight-decay', 'L2 weight decay of the baselines, or the '
        'hyperparameter of that name of an optimizer that declares it '
        '(default: {})'.format(', '.join(
            '{} {}'.format(name, _weight_decay_default(spec))
            for name, spec in OPTIMIZERS.items())))
    add(g, '--momentum', 'momentum of sgd')
    add(g, '--seed', 'random seed of initial weights, data order, '
        'augmentation and the weight samples of VOGN and IVON')
    for spec in OPTIMIZERS.values():
        if spec.posterior is None:
            continue
        g = p.add_argument_group('{} (see docs/algorithm.md)'.format(
            spec.label))
        for h in _declared(spec):
            declared = HYPERPARAMETER_OPTIONS.get(h.name)
            if declared and declared[0][0] == spec.name:  # added once
                flag, text, kwargs = _hyperparameter_option(h.name, declared)
                add(g, flag, text, **kwargs)
    g = p.add_argument_group('devices, output and resuming')
    add(g, '--device', '-1: CPU; >= 0: GPUs, rank r uses GPU device + its '
        'rank on the node')
    add(g, '--communicator', 'ChainerMN communicator (pure_nccl or flat for '
        'GPUs)', metavar=choices('communicator'))
    add(g, '--out', 'output folder')
    add(g, '--resume', 'continue the run in --out from the newest snapshot '
        'every rank can read; refused when its layout or results-deciding '
        'options differ (docs/resuming.md)')
    add(g, '--snapshot-interval', 'epochs between snapshots',
        metavar='EPOCHS')
    add(g, '--eval-batchsize', 'minibatch size of the held-out set\'s '
        'evaluation during training')
    add(g, '--val-samples', 'at each evaluation of the held-out set (see '
        '--val-interval), also report the accuracy and NLL '
        'of the T-sample predictive (VOGN and IVON weight samples, MC '
        'dropout passes) '
        'on the held-out set (--val-split\'s, else the test set), as '
        'evaluate.py computes them; 0: only the '
        'mean-weight numbers', metavar='T')
    add(g, '--val-interval', 'epochs between these evaluations of the '
        'held-out set (and always after the last epoch): the T-sample '
        'predictive costs T passes over it', metavar='EPOCHS')
    add(g, '--no-progress', 'no progress output (default: on rank 0, a bar '
        'when the output, mpiexec\'s under mpiexec, goes to a terminal, else '
        'a line at every tenth of the run; with the time left and images/s)')
    return p


def flag(name):
    """The option that sets ``name`` as the user types it: --no-progress
    for ``progress``, not --progress."""
    for action in build_parser()._actions:
        if action.dest == name and action.option_strings:
            return action.option_strings[0]
    raise KeyError(name)


def _hyperparameter_option(name, declared):
    """(flag, help, argparse keywords) of the option of hyperparameter
    ``name`` that the optimizers ``declared`` [(optimizer,
    Hyperparameter), ...] take; the help is the first one's."""
    first = declared[0][1]
    flag = '--' + name.replace('_', '-')
    if first.type is bool:
        if first.default:
            return '--no-' + flag[2:], 'turn off {} (on by default)'.format(
                first.help), {}
        return flag, first.help, {'action': 'store_true'}
    defaults = ['{} {}'.format(optimizer, h.default) if len(declared) > 1
                else str(h.default) for optimizer, h in declared
                if h.default is not None]
    if defaults:
        return flag, '{} (default: {})'.format(first.help,
                                               ', '.join(defaults)), {}
    return flag, first.help, {}


#: Options whose value may begin with '-' without being a number (a
#: mistyped list such as -1-4), which argparse would take for an option.
_LIST_OPTIONS = ('--classes', '--lr-milestones')


def _attach_list_values(argv):
    """``argv`` with '--classes -1-4' written '--classes=-1-4', so that such
    a value reaches the option's check, which says what is allowed, instead
    of argparse's 'expected one argument'."""
    attached = []
    for arg in argv:
        if attached and attached[-1] in _LIST_OPTIONS and \
                arg.startswith('-') and not arg.startswith('--'):
            attached[-1] += '=' + arg
        else:
            attached.append(arg)
    return attached


class _Unset(object):
    """Marks an option not given on the command line."""


def parse_args(argv=None, prog='train.py'):
    """train.py's options as a :class:`RunConfig`: the command line over the
    --config file over the defaults.  A bad option ends the process with a
    one-line error, after ``prog``, that names it (and the file it came
    from)."""
    parser = build_parser(prog)
    unset = argparse.Namespace(**{action.dest: _Unset for action in
                                  parser._actions if action.dest != 'help'})
    argv = _attach_list_values(sys.argv[1:] if argv is None else argv)
    given = {name: value for name, value in
             vars(parser.parse_args(argv, unset)).items()
             if value is not _Unset}
    path = given.get('config')
    from_file = {}
    try:
        if path:
            from_file = read_config(path)
        known = {field.name for field in dataclasses.fields(RunConfig)} - \
            {'config'}
        unknown = sorted(set(from_file) - known)
        if unknown:  # keys of the file, 'config' included: name the file
            parser.error('--config {}: unknown options {}; valid ones are '
                         '{}'.format(path, unknown, sorted(known)))
        return RunConfig(**dict(from_file, **given))
    except ConfigError as e:
        if e.option in from_file and e.option not in given:
            parser.error('--config {}: {}'.format(path, e))
        parser.error(str(e))
