"""DistributedVOGN under mpiexec against a single-process emulation."""
import subprocess
import time

import numpy
import pytest

import chainer_vogn  # NOQA

import mpi_distributed_worker as worker
from bruteforce import MixedNet, per_example_mixed, vogn_step

P = 4
POINT = ('/bn/gamma', '/bn/beta')


def _emulate(samples):
    """All (shard, sample) gradients in one process, averaged, then the spec."""
    D = P // samples
    hp = dict(worker.HP, dataset_size=worker.N)
    model = MixedNet(seed=0)  # rank 0's initial weights
    state = {n: dict(mu=p.array.astype(numpy.float64),
                     m=numpy.zeros(p.shape), s=numpy.full(p.shape, 0.5))
             for n, p in model.namedparams()}
    names = sorted(state)
    n_eff = hp['dataset_size']
    for step in range(1, worker.STEPS + 1):
        x, t = worker.global_batch(step, D)
        stats = []
        for sample_id in range(samples):
            seq = numpy.random.SeedSequence([worker.SEED, sample_id, step, 0])
            rng = numpy.random.default_rng(seq)
            w = {}
            for n in names:
                eps = rng.standard_normal(state[n]['mu'].shape)
                if n in POINT:
                    w[n] = state[n]['mu']
                    continue
                delta_t = hp['tau'] * hp['prior_precision'] / n_eff
                sig = numpy.sqrt(hp['tau'] / (n_eff * (
                    state[n]['s'] + delta_t + hp['damping'])))
                w[n] = state[n]['mu'] + sig * eps
            for d in range(D):
                rows = slice(d * worker.PER_RANK, (d + 1) * worker.PER_RANK)
                stats.append(per_example_mixed(w, x[rows], t[rows]))
        state = vogn_step(state, None, stats, step, hp, POINT)
    return state


@pytest.mark.parametrize('samples', [2, 4, 1])
def test_matches_single_process_emulation(mpiexec, tmp_path, samples):
    result = worker.launch(mpiexec, tmp_path, samples, processes=P)
    assert result.returncode == 0, result.stdout + result.stderr
    want = _emulate(samples)
    D = P // samples
    for rank in range(P):
        got = numpy.load(str(tmp_path / 'rank{}.npz'.format(rank)))
        assert (int(got['sample_id']), int(got['data_id'])) == \
            (rank // D, rank % D)
        assert int(got['data_size']) == D
        # Exactly one (packed) allreduce per step.
        assert len(got['calls']) == worker.STEPS
        for name in want:
            for key in ('mu', 'm', 's'):
                numpy.testing.assert_allclose(
                    got[key + name], want[name][key], rtol=1e-9, atol=1e-13,
                    err_msg='rank {} {} {}'.format(rank, key, name))


def test_impossible_layout_fails_fast_on_every_rank(mpiexec, tmp_path):
    start = time.time()
    result = worker.launch(mpiexec, tmp_path, 3, processes=P, timeout=120)
    assert result.returncode != 0
    assert time.time() - start < 60
    out = result.stdout + result.stderr
    assert 'cannot split 4 processes into 3 sample groups' in out
    assert 'multiple of --samples' in out


def test_exception_on_one_rank_ends_the_job(mpiexec, tmp_path):
    script = tmp_path / 'crash.py'
    script.write_text(
        'import chainer_vogn\n'
        'from chainer_vogn import distributed\n'
        'import numpy\n'
        'distributed.abort_on_uncaught_exception()\n'
        'comm = distributed.create_communicator("naive")\n'
        'if comm.rank == 1:\n'
        '    raise RuntimeError("rank 1 fails on purpose")\n'
        'comm.allreduce(numpy.ones(3))  # the others would wait forever\n')
    start = time.time()
    result = subprocess.run(mpiexec(P) + [str(script)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert 'rank 1 fails on purpose' in result.stderr
    assert time.time() - start < 60


@pytest.mark.parametrize('processes, samples, lr', [
    (1, 1, 1e-3), (4, 2, 2e-3), (8, 2, 4e-3), (4, 4, 1e-3), (4, 1, 4e-3)])
def test_default_lr_grows_with_the_data_shards(processes, samples, lr):
    """1e-3 per data shard D = P / S, so an epoch moves the mean as far
    whatever P; a given lr is kept, and plain VOGN keeps 1e-3."""
    from chainer_vogn import DistributedVOGN, VOGN

    class Comm(object):
        size, rank = processes, 0

        def split(self, color, key):
            return None

    assert DistributedVOGN(Comm(), 100, samples).lr == pytest.approx(lr)
    assert DistributedVOGN(Comm(), 100, samples, lr=0.5).lr == 0.5
    assert VOGN(100).lr == 1e-3


def test_layout_arithmetic():
    from chainer_vogn import Layout
    lay = [Layout(8, r, 2) for r in range(8)]
    assert [(l.sample_id, l.data_id) for l in lay] == \
        [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    with pytest.raises(ValueError, match='multiple of --samples'):
        Layout(6, 0, 4)
    with pytest.raises(ValueError, match='integer >= 1'):
        Layout(4, 0, 0)
