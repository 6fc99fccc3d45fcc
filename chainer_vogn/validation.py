"""Validation of the Bayesian predictive during training.

Chainer's Evaluator scores one network: VOGN's mean weights, or MC dropout's
network with dropout off.  That point can look much better or worse than
the model evaluate.py scores, so this extension also reports the accuracy
and NLL of the T-sample predictive

    p(y | x) = 1/T sum_t softmax(f(x; w_t))

drawn as evaluate.py draws it (:mod:`chainer_vogn.predictive`), on this
rank's share of the test set, summed over all ranks.  Training is left as
it was: the predictive puts the mean weights back itself, and NumPy's global
generator (which training's dropout draws from) is restored afterwards, so
resumed runs stay exact.
"""
import numpy

import chainer
from chainer import training

from chainer_vogn import metrics
from chainer_vogn import posterior
from chainer_vogn import predictive

#: Keys this extension reports.
ACCURACY = 'validation/predictive/accuracy'
NLL = 'validation/predictive/nll'


class PredictiveValidation(training.Extension):
    """Report :data:`ACCURACY` and :data:`NLL` of the T-sample predictive.

    Args:
        dataset: this rank's test examples ``(x, t)``.
        model: the ``L.Classifier`` being trained.
        optimizer: its optimizer (sigma when it learns a posterior).
        method: 'weights' or 'dropout', the optimizer's sampling in
            ``registry.OPTIMIZERS``.
        n_samples (int): T.
        comm: the ChainerMN communicator the test set is spread over.
        device: the device the model lives on.
        seed (int): sample t draws from ``SeedSequence([seed, t])``.
    """

    trigger = 1, 'epoch'
    priority = training.PRIORITY_WRITER
    name = 'PredictiveValidation'

    def __init__(self, dataset, model, optimizer, method, n_samples, comm,
                 device, seed=0, batchsize=256):
        if method not in ('weights', 'dropout'):
            raise ValueError("method must be 'weights' or 'dropout', got "
                             '{!r}'.format(method))
        self.x, self.t = chainer.dataset.concat_examples(dataset)
        self.model, self.optimizer = model, optimizer
        self.method, self.n_samples = method, n_samples
        self.comm, self.device = comm, device
        self.seed, self.batchsize = seed, batchsize

    def __call__(self, trainer):
        now = posterior.from_model(self.model, self.optimizer)
        global_state = numpy.random.get_state()
        try:
            probs, = (p.probs for p in predictive.predict(
                self.model, now, self.method, [self.x], self.n_samples,
                seed=self.seed, device=self.device,
                batchsize=self.batchsize))
        finally:
            numpy.random.set_state(global_state)
        n = len(self.t)
        local = numpy.zeros(3)
        if n:  # sums, so that ranks with more examples weigh more
            local[:] = (metrics.accuracy(probs, self.t) * n,
                        metrics.nll(probs, self.t) * n, n)
        correct, nll, count = self.comm.mpi_comm.allreduce(local)
        chainer.report({ACCURACY: correct / count, NLL: nll / count})

