"""Step time of Adam, MC-dropout, VOGN and IVON on one process, VOGN's split.

Every optimizer trains the same architecture on the same random CIFAR-sized
batch (3x32x32, 10 classes); the steps of the four are interleaved, so a
busy machine slows all of them alike.  The table gives the median step time
after warm-up, VOGN/Adam and IVON/Adam (IVON needs no per-example
gradients, so its step should cost about Adam's), and the median time of
each part of a VOGN step:
forward, backward (without the hook), per-example statistics (the hook),
sampling, update, communication (reduce_statistics: nothing on one process)
and the rest (accumulating g and h, walking the graph, checks).  Timing does
not change what the optimizer computes: the bench wraps the optimizer's own
methods on its instance, times the backward of every function with a
FunctionHook entered before VOGN's, and times the statistics hook by
wrapping ``SquaredGradientHook.backward_postprocess`` during VOGN's steps.

    python bench/step_time.py [--device 0] [--out step_time.json]
"""
import argparse
import collections
import contextlib
import functools
import statistics
import time
from unittest import mock

from _common import (machine, print_table, random_batch,
                     synchronize, write_json)

import chainer
import chainer.functions as F

from chainer_vogn import models
from chainer_vogn import run_setup
from chainer_vogn.curvature import SquaredGradientHook
from chainer_vogn.ivon import IVON
from chainer_vogn.optimizer import VOGN

OPTIMIZERS = ('adam', 'mcdropout', 'vogn', 'ivon')
PHASES = ('forward', 'backward', 'hook', 'sampling', 'update',
          'communication', 'other')


class Clock(object):
    """Seconds per phase of the current step, synchronising the device."""

    def __init__(self, device):
        self.device = device
        self.seconds = collections.defaultdict(float)
        self._started = {}

    def start(self, phase):
        synchronize(self.device)
        self._started[phase] = time.perf_counter()

    def stop(self, phase):
        synchronize(self.device)
        self.seconds[phase] += time.perf_counter() - self._started.pop(phase)

    @contextlib.contextmanager
    def __call__(self, phase):
        self.start(phase)
        try:
            yield
        finally:
            self.stop(phase)


def timed(function, clock, phase):
    """``function``, its calls timed as ``phase`` of ``clock``."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with clock(phase):
            return function(*args, **kwargs)
    return wrapper


class BackwardTimer(chainer.FunctionHook):
    """Times the backward of every function as the phase 'backward'.

    Entered before VOGN enters its SquaredGradientHook, so Chainer calls this
    hook's backward_postprocess first: the statistics hook is not counted.
    """

    name = 'BackwardTimer'

    def __init__(self, clock):
        self.clock = clock

    def backward_preprocess(self, function, in_data, out_grad):
        self.clock.start('backward')

    def backward_postprocess(self, function, in_data, out_grad):
        self.clock.stop('backward')


def timed_vogn_step(opt, clock):
    """A function running ``opt.update`` with its parts timed in ``clock``."""
    for method, phase in (('_sample', 'sampling'),
                          ('reduce_statistics', 'communication'),
                          ('_apply_update', 'update')):
        setattr(opt, method, timed(getattr(opt, method), clock, phase))
    hook_time = timed(SquaredGradientHook.backward_postprocess, clock, 'hook')

    def step(lossfun, *args):
        with mock.patch.object(SquaredGradientHook, 'backward_postprocess',
                               hook_time), BackwardTimer(clock):
            opt.update(lossfun, *args)
    return step


def make_step(name, arch, device, clock, num_samples):
    """A function running one step of optimizer ``name`` on ``arch``."""
    dropout = 0.5 if name == 'mcdropout' else 0.0
    model = models.get_model(arch, 10, in_channels=3, dropout=dropout)
    model.to_device(device)
    if name == 'vogn':
        opt = VOGN(50000, num_samples=num_samples).setup(model)
        update = timed_vogn_step(opt, clock)
    elif name == 'ivon':
        update = IVON(50000, num_samples=num_samples).setup(model).update
    else:
        opt = chainer.optimizers.Adam().setup(model)
        update = opt.update

    def lossfun(x, t):
        with clock('forward'):
            return F.softmax_cross_entropy(model(x), t)
    return lambda x, t: update(lossfun, x, t)


def vogn_split(seconds, total):
    """The parts of one VOGN step; 'other' is what no phase covers."""
    split = {phase: seconds[phase] for phase in PHASES if phase != 'other'}
    split['other'] = total - sum(split.values())
    return split


def bench(arch, batch, device, steps, warmup, num_samples, budget):
    """Median step times and VOGN's median split for one architecture.

    The timed rounds stop after ``steps``, or once ``budget`` seconds have
    passed and at least 5 rounds are done.
    """
    x, t = random_batch(batch, device)
    clocks = {name: Clock(device) for name in OPTIMIZERS}
    runs = {name: make_step(name, arch, device, clocks[name], num_samples)
            for name in OPTIMIZERS}
    times = {name: [] for name in OPTIMIZERS}
    splits = []
    start = time.perf_counter()
    for i in range(warmup + steps):
        if i >= warmup + 5 and time.perf_counter() - start > budget:
            break
        for name in OPTIMIZERS:
            clock = clocks[name]
            clock.seconds.clear()
            with clock('step'):
                runs[name](x, t)
            if i >= warmup:
                times[name].append(clock.seconds['step'])
                if name == 'vogn':
                    splits.append(vogn_split(clock.seconds,
                                             clock.seconds['step']))
    med = {name: statistics.median(v) for name, v in times.items()}
    return {'arch': arch, 'batch': batch, 'steps': len(splits),
            'warmup': warmup, 'num_samples': num_samples,
            'adam_s': med['adam'], 'mcdropout_s': med['mcdropout'],
            'vogn_s': med['vogn'], 'ivon_s': med['ivon'],
            'vogn_over_adam': med['vogn'] / med['adam'],
            'ivon_over_adam': med['ivon'] / med['adam'],
            'mcdropout_over_adam': med['mcdropout'] / med['adam'],
            'vogn_split_s': {p: statistics.median(s[p] for s in splits)
                             for p in PHASES}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', default='lenet5:128,resnet18:32',
                        help='comma-separated arch:batch pairs')
    parser.add_argument('--steps', type=int, default=30,
                        help='timed steps per optimizer')
    parser.add_argument('--warmup', type=int, default=3,
                        help='untimed steps first')
    parser.add_argument('--budget', type=float, default=240,
                        help='seconds per model after which the timed steps '
                             'stop (at least 5 are run)')
    parser.add_argument('--samples', type=int, default=1,
                        help='Monte Carlo samples K of VOGN and IVON')
    parser.add_argument('--device', type=int, default=-1,
                        help='-1: CPU, n >= 0: GPU n (CuPy)')
    parser.add_argument('--smoke', action='store_true',
                        help='a few steps at tiny batch sizes')
    parser.add_argument('--out', help='write the results as JSON here')
    args = parser.parse_args()
    if args.smoke:
        args.models, args.steps, args.warmup = 'lenet5:4,resnet18:2', 2, 1
    info = machine(args.device)
    device = run_setup.select_device(args.device)
    results = []
    for spec in args.models.split(','):
        arch, batch = spec.split(':')
        results.append(bench(arch, int(batch), device, args.steps,
                             args.warmup, args.samples, args.budget))
    print_table(['arch', 'batch', 'steps', 'Adam s', 'MC-dropout s',
                 'VOGN s', 'IVON s', 'VOGN/Adam', 'IVON/Adam'],
                [[r['arch'], r['batch'], r['steps'], r['adam_s'],
                  r['mcdropout_s'], r['vogn_s'], r['ivon_s'],
                  r['vogn_over_adam'], r['ivon_over_adam']]
                 for r in results])
    print()
    print('VOGN split (median seconds per step):')
    print_table(['arch'] + list(PHASES),
                [[r['arch']] + [r['vogn_split_s'][p] for p in PHASES]
                 for r in results])
    write_json(args.out, {'machine': info, 'results': results})


if __name__ == '__main__':
    main()
