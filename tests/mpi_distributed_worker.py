"""Run under mpiexec by test_distributed.py and test_ivon.py: 3 steps of
DistributedVOGN (or DistributedIVON).

Rank r trains MixedNet (float64) on shard data_id of a fixed global batch
per step and writes its mu, the optimizer's state (VOGN: m, s; IVON: m, h),
layout and allreduce count to OUT/rank<r>.npz.

    mpi_distributed_worker.py OUT S [vogn|ivon]
"""
import os
import subprocess
import sys

import numpy

import chainer_vogn
import chainer.functions as F
from chainer_vogn import distributed

from bruteforce import MixedNet

STEPS, PER_RANK, N, SEED = 3, 3, 40, 11
HP = dict(lr=0.1, beta1=0.8, beta2=0.95, prior_precision=2.0, tau=0.5,
          damping=1e-3, aug_factor=1.0, init_precision=0.5)
IVON_HP = dict(lr=0.05, beta1=0.8, beta2=0.9, hess_init=0.5,
               weight_decay=1e-2, clip_radius=2.0)


def launch(mpiexec, out, samples, algorithm='vogn', processes=4,
           timeout=240):
    """Run this worker on ``processes`` ranks (``mpiexec``: the fixture)."""
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = mpiexec(processes) + [os.path.abspath(__file__), str(out),
                                str(samples), algorithm]
    # Keep an inherited PYTHONPATH, so a worktree's package wins there too.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [here, os.environ.get('PYTHONPATH')])))
    return subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=timeout)


def global_batch(step, shards):
    rng = numpy.random.RandomState(1000 + step)
    x = rng.randn(shards * PER_RANK, 2, 6, 6)
    t = rng.randint(0, 4, shards * PER_RANK).astype(numpy.int32)
    return x, t


def main(out, samples, algorithm):
    distributed.abort_on_uncaught_exception()
    comm = distributed.create_communicator('naive')
    # Every rank starts from different weights: setup must broadcast rank 0's.
    model = MixedNet(seed=comm.rank)
    for p in model.params():
        p.array = p.array.astype(numpy.float64)
    build, hp = {'vogn': (chainer_vogn.DistributedVOGN, HP),
                 'ivon': (chainer_vogn.DistributedIVON, IVON_HP)}[algorithm]
    opt = build(comm, N, num_sample_groups=samples, seed=SEED,
                **hp).setup(model)
    calls = []
    allreduce = comm.allreduce

    def counting_allreduce(x):
        calls.append(x.size)
        return allreduce(x)
    comm.allreduce = counting_allreduce
    D = opt.layout.num_data_shards
    for step in range(1, STEPS + 1):
        x, t = global_batch(step, D)
        rows = slice(opt.data_id * PER_RANK, (opt.data_id + 1) * PER_RANK)
        opt.update(lambda a, b: F.softmax_cross_entropy(model(a), b),
                   x[rows], t[rows])
    result = {'calls': numpy.array(calls), 'sample_id': opt.sample_id,
              'data_id': opt.data_id, 'data_size': opt.data_comm.size}
    for name, p in model.namedparams():
        result['mu' + name] = p.array
        for key, value in p.update_rule.state.items():
            result[key + name] = value
    numpy.savez('{}/rank{}.npz'.format(out, comm.rank), **result)


if __name__ == '__main__':
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
