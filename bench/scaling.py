"""Time per VOGN iteration on 1 and 2 processes (mpiexec), and the ratios.

Three runs of DistributedVOGN with the same per-process batch:

* ``single``: ``mpiexec -n 1`` (S = 1);
* ``samples``: ``mpiexec -n 2 --samples 2``: sample parallelism, both ranks
  on the same minibatch with their own weight sample (K = 2 in all);
* ``data``: ``mpiexec -n 2 --samples 1``: plain data parallelism.

Ideal scaling keeps the time per iteration of the 2-process runs at the
single process's.  Every rank runs with OMP_NUM_THREADS=1 and
OPENBLAS_NUM_THREADS=1, so that the two ranks of a 2-process run on a
2-core machine do not compete for cores with their BLAS threads; the single
process is held to one thread as well.  The time of one iteration is the
slowest rank's; a run gives the median over its timed iterations, and the
configurations run in turn ``--rounds`` times, of which the table gives the
median (the machine may be shared).  The allreduce is reduce_statistics.
Open MPI uses the transports of ``--btl`` (default ``self,tcp``, as the
tests use; ``self,sm`` is faster where /dev/shm is large enough).

    python bench/scaling.py [--models lenet5:128] [--out scaling.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _common import (THREAD_VARS, machine, mpiexec_prefix, print_table,
                     random_batch, write_json)

import chainer
import chainer.functions as F

from chainer_vogn import distributed
from chainer_vogn import models

RUNS = (('single', 1, 1), ('samples', 2, 2), ('data', 2, 1))


class TimedDistributedVOGN(distributed.DistributedVOGN):
    """DistributedVOGN that records the seconds of each allreduce."""

    def __init__(self, *args, **kwargs):
        super(TimedDistributedVOGN, self).__init__(*args, **kwargs)
        self.comm_seconds = []

    def reduce_statistics(self, grads, curvatures):
        start = time.perf_counter()
        out = super(TimedDistributedVOGN, self).reduce_statistics(
            grads, curvatures)
        self.comm_seconds.append(time.perf_counter() - start)
        return out


def worker(args):
    """One rank: time ``args.steps`` iterations; rank 0 prints JSON."""
    from mpi4py import MPI
    distributed.abort_on_uncaught_exception()
    comm = distributed.create_communicator('naive')
    model = models.get_model(args.arch, 10)
    device = chainer.get_device('@numpy')
    opt = TimedDistributedVOGN(comm, 50000, num_sample_groups=args.samples)
    x, t = random_batch(args.batch, device, seed=opt.layout.data_id)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        model(x)  # initialise lazily sized links before the broadcast
    opt.setup(model)

    def lossfun(x, t):
        return F.softmax_cross_entropy(model(x), t)

    times = []
    for i in range(args.warmup + args.steps):
        comm.mpi_comm.Barrier()
        start = time.perf_counter()
        opt.update(lossfun, x, t)
        seconds = comm.mpi_comm.allreduce(time.perf_counter() - start,
                                          op=MPI.MAX)
        if i >= args.warmup:
            times.append(seconds)
    comm_seconds = comm.mpi_comm.allreduce(
        statistics.median(opt.comm_seconds[args.warmup:]), op=MPI.MAX)
    if comm.rank == 0:
        print('RESULT ' + json.dumps({
            'iteration_s': statistics.median(times),
            'allreduce_s': comm_seconds, 'processes': comm.size,
            'samples': args.samples}))


def launch(n, samples, arch, batch, args):
    """Run the worker under ``mpiexec -n n`` and return rank 0's result."""
    cmd = mpiexec_prefix(n, args.btl) + [
        sys.executable, os.path.abspath(__file__), '--worker',
        '--arch', arch, '--batch', str(batch), '--samples', str(samples),
        '--steps', str(args.steps), '--warmup', str(args.warmup)]
    env = dict(os.environ, **{var: '1' for var in THREAD_VARS})
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[len('RESULT '):])
    raise SystemExit('mpiexec -n {} failed (exit {}):\n{}\n{}'.format(
        n, proc.returncode, proc.stdout, proc.stderr))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', default='lenet5:128',
                        help='comma-separated arch:batch pairs (batch per '
                             'process)')
    parser.add_argument('--steps', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--rounds', type=int, default=3,
                        help='runs of each configuration, in turn; the '
                             'median over runs is reported')
    parser.add_argument('--btl', default='self,tcp',
                        help="Open MPI transports (--mca btl); 'self,sm' "
                             'is faster where shared memory is large enough')
    parser.add_argument('--smoke', action='store_true',
                        help='a few steps at a tiny batch size')
    parser.add_argument('--out', help='write the results as JSON here')
    parser.add_argument('--worker', action='store_true',
                        help=argparse.SUPPRESS)
    parser.add_argument('--arch', help=argparse.SUPPRESS)
    parser.add_argument('--batch', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--samples', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.smoke:
        args.models, args.steps, args.warmup, args.rounds = \
            'lenet5:4', 2, 1, 1
    info = machine()
    info.update({var: '1 per process' for var in THREAD_VARS}, btl=args.btl)
    results = []
    for spec in args.models.split(','):
        arch, batch = spec.split(':')
        row = {'arch': arch, 'batch_per_process': int(batch),
               'steps': args.steps, 'rounds': args.rounds}
        runs = {name: [] for name, _, _ in RUNS}
        for _ in range(args.rounds):
            for name, n, samples in RUNS:
                runs[name].append(launch(n, samples, arch, int(batch), args))
        for name in runs:
            row[name] = {
                key: statistics.median(r[key] for r in runs[name])
                for key in ('iteration_s', 'allreduce_s')}
            row[name]['rounds_iteration_s'] = [r['iteration_s']
                                               for r in runs[name]]
        for name in ('samples', 'data'):
            row[name + '_over_single'] = (row[name]['iteration_s'] /
                                          row['single']['iteration_s'])
        results.append(row)
    print_table(['arch', 'batch/process', 'P=1 s', 'P=2 S=2 s', 'P=2 S=1 s',
                 'S=2 / P=1', 'S=1 / P=1', 'allreduce s (P=2 S=2)'],
                [[r['arch'], r['batch_per_process'],
                  r['single']['iteration_s'], r['samples']['iteration_s'],
                  r['data']['iteration_s'], r['samples_over_single'],
                  r['data_over_single'], r['samples']['allreduce_s']]
                 for r in results])
    write_json(args.out, {'machine': info, 'results': results})


if __name__ == '__main__':
    main()
