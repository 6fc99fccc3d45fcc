"""Peak memory of VOGN against Adam (ResNet-18, batch 128 by default).

Each optimizer trains in a fresh child process, so one cannot inherit the
other's peak.  On the CPU (``--device -1``) the figure is the child's peak
resident set size, ``ru_maxrss`` from ``os.wait4`` on that child (so it
includes the interpreter, the libraries and the model, not only NumPy's
arrays); the child also reports its resident size just before the first
step, so the growth due to training shows.  On a GPU the figure is the
CuPy memory pool's size after the steps: the pool keeps every block it has
allocated, so that is its peak.

    python bench/memory.py [--device 0] [--out memory.json]
"""
import argparse
import json
import os
import subprocess
import sys

from _common import machine, print_table, random_batch, write_json

import chainer
import chainer.functions as F

from chainer_vogn import models
from chainer_vogn import run_setup
from chainer_vogn.optimizer import VOGN

OPTIMIZERS = ('adam', 'vogn')


def rss_bytes():
    """This process's resident set size now (Linux /proc)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('no VmRSS in /proc/self/status')


def worker(args):
    """Train ``args.steps`` steps; print the memory figures as JSON."""
    device = run_setup.select_device(args.device)
    model = models.get_model(args.arch, 10)
    model.to_device(device)
    opt = VOGN(50000) if args.optimizer == 'vogn' else \
        chainer.optimizers.Adam()
    opt.setup(model)
    x, t = random_batch(args.batch, device)
    result = {'before_steps_bytes': rss_bytes()}
    for _ in range(args.steps):
        opt.update(lambda x, t: F.softmax_cross_entropy(model(x), t), x, t)
    if args.device >= 0:
        pool = device.xp.get_default_memory_pool()
        device.xp.cuda.Device().synchronize()
        result['gpu_pool_bytes'] = pool.total_bytes()
    print('RESULT ' + json.dumps(result))


def measure(optimizer, args):
    """Run one optimizer in a child process; its figures and peak RSS."""
    cmd = [sys.executable, os.path.abspath(__file__), '--worker',
           '--optimizer', optimizer, '--arch', args.arch,
           '--batch', str(args.batch), '--steps', str(args.steps),
           '--device', str(args.device)]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    for line in out.splitlines():
        if line.startswith('RESULT '):
            result = json.loads(line[len('RESULT '):])
            result['peak_rss_bytes'] = usage.ru_maxrss * 1024
            return result
    raise SystemExit('{} child failed (exit {}):\n{}'.format(
        optimizer, child.returncode, out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='resnet18')
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--steps', type=int, default=3,
                        help='steps per optimizer (VOGN samples from 2 on)')
    parser.add_argument('--device', type=int, default=-1,
                        help='-1: CPU, n >= 0: GPU n (CuPy)')
    parser.add_argument('--smoke', action='store_true',
                        help='LeNet-5 at batch 4, 2 steps')
    parser.add_argument('--out', help='write the results as JSON here')
    parser.add_argument('--worker', action='store_true',
                        help=argparse.SUPPRESS)
    parser.add_argument('--optimizer', choices=OPTIMIZERS,
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.smoke:
        args.arch, args.batch, args.steps = 'lenet5', 4, 2
    info = machine(args.device)
    result = {name: measure(name, args) for name in OPTIMIZERS}
    key = 'gpu_pool_bytes' if args.device >= 0 else 'peak_rss_bytes'
    result.update({'arch': args.arch, 'batch': args.batch,
                   'steps': args.steps, 'measure': key,
                   'vogn_over_adam': (result['vogn'][key] /
                                      result['adam'][key])})
    mib = 2.0 ** 20
    print_table(['optimizer', 'peak RSS MiB', 'RSS before steps MiB']
                + (['GPU pool MiB'] if args.device >= 0 else []),
                [[name, result[name]['peak_rss_bytes'] / mib,
                  result[name]['before_steps_bytes'] / mib]
                 + ([result[name]['gpu_pool_bytes'] / mib]
                    if args.device >= 0 else [])
                 for name in OPTIMIZERS])
    print('VOGN/Adam ({}): {:.3f}'.format(key, result['vogn_over_adam']))
    write_json(args.out, {'machine': info, 'result': result})


if __name__ == '__main__':
    main()
