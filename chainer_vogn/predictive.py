"""The Monte Carlo predictive distribution of a model and its posterior.

Every kind of run is predicted through the same average

    p(y | x) = 1/T sum_t softmax(f(x; w_t))

with the T samples drawn by one of three methods (the ``sampling`` of the
run's optimizer in :data:`chainer_vogn.registry.OPTIMIZERS`): 'weights'
draws weights w_t = mu + sigma * eps_t from the posterior (VOGN), 'dropout'
keeps dropout on with the mean weights (MC dropout), and 'point' makes one
deterministic pass with the mean weights (Adam/SGD, T = 1).
BatchNormalization always uses its running statistics.

Sample t draws its noise (eps_t, or the dropout masks) from
``numpy.random.SeedSequence([seed, t])`` and nothing else, so a sample is the
same whichever process computes it: under ``mpiexec -n P`` rank r computes
samples r, r + P, ... and rank 0 gathers them into the same (T, N, C) array a
single process gets.

This module knows nothing of run folders or reports: see
:mod:`chainer_vogn.run_folder` (a run on new images) and
:mod:`chainer_vogn.evaluation` (evaluate.py).
"""
import collections

import numpy

import chainer
from chainer import backend

from chainer_vogn import registry

Prediction = collections.namedtuple('Prediction', ['probs', 'sample_probs'])


def samples_used(method, mc_samples):
    """T for ``method`` when ``mc_samples`` are asked for (1 for 'point')."""
    if int(mc_samples) != mc_samples or mc_samples < 1:
        raise ValueError('the number of Monte Carlo samples T must be an '
                         'integer >= 1, got {!r}'.format(mc_samples))
    return 1 if method == 'point' else int(mc_samples)


def softmax(logits):
    """Row-wise softmax in float64."""
    z = numpy.asarray(logits, numpy.float64)
    z = numpy.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _forward(model, x, device, batchsize, on_batch):
    """Logits of ``model`` on ``x`` in batches, on the host."""
    predictor = getattr(model, 'predictor', model)
    out = []
    for start in range(0, len(x), batchsize):
        y = predictor(device.send(x[start:start + batchsize]))
        out.append(backend.CpuDevice().send(y.array))
        if on_batch is not None:
            on_batch(len(y))
    return numpy.concatenate(out)


def _passes(model, method, inputs, device, batchsize, seq, on_batch):
    """Logits on each input in test mode, dropout on for 'dropout'.

    Dropout draws its masks for every input afresh from ``seq``, so sample t
    is the same network on every input, as a weight sample is, and an input
    gets the same masks whatever was predicted before it.
    """
    cudnn = 'never' if method == 'dropout' else chainer.config.use_cudnn
    logits = []
    with chainer.using_config('train', False), \
            chainer.using_config('mc_dropout', method == 'dropout'), \
            chainer.using_config('use_cudnn', cudnn), \
            chainer.no_backprop_mode():
        for x in inputs:
            if method == 'dropout':
                _seed_dropout(seq, device)
            logits.append(_forward(model, x, device, batchsize, on_batch))
    return logits


def _seed_dropout(seq, device):
    """Seed the generators F.dropout draws from (numpy's or CuPy's)."""
    numpy.random.seed(seq.generate_state(4))
    if device.xp is not numpy:
        device.xp.random.seed(int(seq.generate_state(1, numpy.uint64)[0]))


def iterate_samples(model, posterior, method, inputs, samples, seed=0,
                    device=None, batchsize=256, on_batch=None):
    """Yield ``(t, logits)`` for each sample index t in ``samples``.

    Args:
        model: the link the posterior was saved from (an ``L.Classifier``,
            whose ``predictor`` gives the logits, or a bare predictor).
        posterior: a :class:`chainer_vogn.posterior.Posterior`.
        method: 'weights', 'dropout' or 'point' (see the module docstring).
        inputs: list of float32 arrays (N_k, ...) to predict.
        samples: iterable of sample indices t >= 0.
        seed (int): with t, the seed of sample t's noise.
        device: a Chainer device or its specifier (default: the CPU).
        batchsize (int): examples per forward pass.
        on_batch: called with the number of examples of each forward pass
            when it is done (progress reports), if given.

    ``logits`` is a list with one float32 (N_k, C) array per input.
    MC dropout runs with cuDNN off on GPUs, as cuDNN's dropout masks ignore
    CuPy's seed.  Dropout reseeds NumPy's/CuPy's global generator.
    ``model`` holds the posterior's mu or sample only while a sample is
    computed (:meth:`~chainer_vogn.posterior.Posterior.sampled`): it is left
    with its own weights and persistent values, and on its own device, also
    when a pass raises.
    """
    if method not in registry.SAMPLINGS:
        raise ValueError("method must be 'weights', 'dropout' or 'point', "
                         'got {!r}'.format(method))
    if batchsize < 1:
        raise ValueError('batchsize must be >= 1, got {}'.format(batchsize))
    device = chainer.get_device('@numpy' if device is None else device)
    home = model.device
    if home != device:
        model.to_device(device)
    try:
        for t in samples:
            if t < 0:
                raise ValueError('sample indices must be >= 0, got '
                                 '{}'.format(t))
            seq = numpy.random.SeedSequence([seed, t])
            rng = numpy.random.default_rng(seq) if method == 'weights' \
                else None
            with posterior.sampled(model, rng):
                logits = _passes(model, method, inputs, device, batchsize,
                                 seq, on_batch)
            yield t, logits
    finally:
        if home != device:
            model.to_device(home)


def predict(model, posterior, method, inputs, n_samples, seed=0, device=None,
            batchsize=256, comm=None, on_batch=None):
    """The predictive distribution on each array in ``inputs``.

    ``n_samples`` is T (use :func:`samples_used` for the run's method).
    With ``comm``, an mpi4py communicator of P processes, rank r computes
    samples r, r + P, ... and rank 0 gathers them; every rank must call this.
    ``on_batch`` is :func:`iterate_samples`'s.

    Returns, on rank 0 (or without ``comm``), one :class:`Prediction` per
    input: ``probs`` (N, C), the mean of the T softmax outputs, and
    ``sample_probs`` (T, N, C) in sample order; None on the other ranks.
    """
    samples_used(method, n_samples)
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    mine = {t: [softmax(y) for y in logits] for t, logits in iterate_samples(
        model, posterior, method, inputs, range(rank, n_samples, size), seed,
        device, batchsize, on_batch)}
    if comm is not None:
        parts = comm.gather(mine, root=0)
        if rank != 0:
            return None
        mine = {t: p for part in parts for t, p in part.items()}
    predictions = []
    for k in range(len(inputs)):
        sample_probs = numpy.stack([mine[t][k] for t in range(n_samples)])
        predictions.append(Prediction(sample_probs.mean(axis=0),
                                      sample_probs))
    return predictions


