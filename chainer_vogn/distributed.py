"""VOGN and IVON over many processes: data shards and Monte Carlo samples.

P processes form S sample groups of D = P / S ranks each (``docs/
algorithm.md``, "Distributed layout"):

* rank r has ``sample_id = r // D`` and ``data_id = r % D``;
* the *data communicator* (``data_comm``) joins the D ranks of one sample
  group (same weight sample, different data shards) and scatters the data;
  the S ranks with the same data_id see the same minibatches with different
  weight samples and need no communicator of their own;
* eps comes from (seed, sample_id, step), so it is shared inside a sample
  group and independent across groups;
* each step does ONE allreduce of the packed [g_hat, h_hat] over all P ranks,
  then every rank applies the same update, so mu and the optimizer's state
  stay identical.

This is not wrapped in ``chainermn.create_multi_node_optimizer``: that
wrapper runs forward/backward itself and skips the first update.
"""
from chainer import backend
from chainer.backends import cuda
import chainermn
from chainermn import global_except_hook

from chainer_vogn.ivon import IVON
from chainer_vogn.optimizer import VOGN


def scaled_lr(lr, num_data_shards):
    """The step size when none is given: the one-process default ``lr``
    times the D data shards a step averages over.

    A step sees D times the images of one process's minibatch, so an epoch
    has D times fewer steps; growing the step with D (the linear scaling
    rule) lets an epoch move the mean as far as on one process.  Measured
    on digits, 10 epochs (docs/tuning.md): P = 4, S = 2 went from NLL 0.108
    to 0.091 and P = 8, S = 2 from 0.150 to 0.095 with VOGN; with IVON,
    P = 4, S = 2 went from 0.133 to 0.112 (docs/algorithm.md, "IVON").
    """
    return lr * num_data_shards


class Layout(object):
    """Where one rank sits among P processes split into S sample groups."""

    def __init__(self, size, rank, num_sample_groups):
        if int(num_sample_groups) != num_sample_groups or \
                num_sample_groups < 1:
            raise ValueError(
                '--samples S = {!r} is invalid: it must be an integer '
                '>= 1'.format(num_sample_groups))
        if size % num_sample_groups != 0:
            raise ValueError(
                'cannot split {} processes into {} sample groups: the number '
                'of processes P must be a multiple of --samples S (P = S x D, '
                'D data shards per sample). Use e.g. mpiexec -n {} with '
                '--samples {}, or a divisor of {} as --samples.'.format(
                    size, num_sample_groups,
                    num_sample_groups * max(1, size // num_sample_groups),
                    num_sample_groups, size))
        self.size = size
        self.rank = rank
        self.num_sample_groups = int(num_sample_groups)
        self.num_data_shards = size // self.num_sample_groups
        self.sample_id = rank // self.num_data_shards
        self.data_id = rank % self.num_data_shards

    def __repr__(self):
        return 'Layout(P={}, S={}, D={}, rank={}, sample_id={}, ' \
            'data_id={})'.format(self.size, self.num_sample_groups,
                                 self.num_data_shards, self.rank,
                                 self.sample_id, self.data_id)


def abort_on_uncaught_exception():
    """Make an uncaught exception on any rank end the whole MPI job.

    Without this, the other ranks wait forever in their next collective call.
    """
    global_except_hook.add_hook()


class SampleGroups(object):
    """The data x sample layout, mixed into a
    :class:`~chainer_vogn.variational.SampledGradientMethod` (see the module
    docstring): rank 0's parameters everywhere, eps by sample group and one
    packed allreduce of [g_hat, h_hat] per step.

    Args:
        comm: a ChainerMN communicator over all P processes (``naive`` on
            CPU, ``pure_nccl`` or ``flat`` on GPUs).
        dataset_size (int): N, the size of the WHOLE training set.
        num_sample_groups (int): S; P must be a multiple of it.
        lr (float): the step size; None: :func:`scaled_lr` of the declared
            default and the D = P / S data shards.
        **kwargs: the other arguments of the optimizer (num_samples, seed,
            hyperparameters).
    """

    def __init__(self, comm, dataset_size, num_sample_groups=1, lr=None,
                 **kwargs):
        layout = Layout(comm.size, comm.rank, num_sample_groups)
        if lr is None:
            lr = scaled_lr(self.hyperparameter('lr').default,
                           layout.num_data_shards)
        super(SampleGroups, self).__init__(dataset_size, lr=lr, **kwargs)
        self.layout = layout
        self.comm = comm
        self.sample_id = layout.sample_id
        self.data_id = layout.data_id
        self.data_comm = comm.split(self.sample_id, comm.rank)

    def setup(self, link):
        """Attach to ``link`` and broadcast its parameters from rank 0.

        Parameters must be initialised (run one forward pass first for links
        built with a lazy input size).
        """
        super(SampleGroups, self).setup(link)
        uninitialised = [name for name, p in link.namedparams()
                         if p.array is None]
        if uninitialised:
            raise ValueError(
                'parameters {} are not initialised; run one forward pass on '
                'every rank before {}.setup so rank 0 can broadcast '
                'them'.format(uninitialised, type(self).__name__))
        self.comm.bcast_data(link)
        return self

    def reduce_statistics(self, grads, curvatures):
        """Average [g_hat, h_hat] over all ranks in one packed allreduce."""
        names = sorted(grads)
        arrays = [grads[n] for n in names] + [curvatures[n] for n in names]
        xp = backend.get_array_module(arrays[0])
        flat = xp.concatenate([a.ravel() for a in arrays])
        flat = self._allreduce_mean(flat)
        out, offset = [], 0
        for a in arrays:
            out.append(flat[offset:offset + a.size].reshape(a.shape))
            offset += a.size
        half = len(names)
        return dict(zip(names, out[:half])), dict(zip(names, out[half:]))

    def _allreduce_mean(self, flat):
        nccl_comm = getattr(self.comm, 'nccl_comm', False)
        if isinstance(flat, cuda.ndarray) and nccl_comm is not False:
            self._nccl_allreduce_sum(flat)
        elif isinstance(flat, cuda.ndarray):
            flat = cuda.to_gpu(self.comm.allreduce(cuda.to_cpu(flat)))
        else:
            flat = self.comm.allreduce(flat)
        flat *= 1.0 / self.comm.size
        return flat

    def _nccl_allreduce_sum(self, flat):
        from cupy.cuda import nccl
        from chainermn.communicators import _communication_utility
        self.comm._init_comms()
        dtype = _communication_utility._get_nccl_type_id(flat.dtype)
        self.comm.nccl_comm.allReduce(
            flat.data.ptr, flat.data.ptr, flat.size, dtype, nccl.NCCL_SUM,
            cuda.Stream.null.ptr)


class DistributedVOGN(SampleGroups, VOGN):
    """VOGN with data-parallel and sample-parallel processes
    (:class:`SampleGroups` has the arguments)."""


class DistributedIVON(SampleGroups, IVON):
    """IVON with data-parallel and sample-parallel processes
    (:class:`SampleGroups` has the arguments)."""


def create_communicator(name, device=-1):
    """A ChainerMN communicator; on the CPU (device < 0) only ``naive``."""
    if device < 0 and name != 'naive':
        raise ValueError(
            '--communicator {} needs GPUs; use --communicator naive with '
            '--device -1'.format(name))
    return chainermn.create_communicator(name)
