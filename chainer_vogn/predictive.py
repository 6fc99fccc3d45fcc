"""Predictive distributions of trained runs, and the evaluation behind
evaluate.py.

Every kind of run is evaluated through the same Monte Carlo average

    p(y | x) = 1/T sum_t softmax(f(x; w_t))

with the T samples drawn as the run was trained (the ``sampling`` of its
optimizer in :data:`chainer_vogn.experiment.OPTIMIZERS`): VOGN
draws weights w_t = mu + sigma * eps_t from its posterior, MC dropout keeps
dropout on with the mean weights, and Adam/SGD make one deterministic pass
(T = 1).  BatchNormalization always uses its running statistics.

Sample t draws its noise (eps_t, or the dropout masks) from
``numpy.random.SeedSequence([seed, t])`` and nothing else, so a sample is the
same whichever process computes it: under ``mpiexec -n P`` rank r computes
samples r, r + P, ... and rank 0 gathers them into the same (T, N, C) array a
single process gets.
"""
import argparse
import collections
import json
import os
import time
import zipfile

import numpy

import chainer
from chainer import backend

from chainer_vogn import datasets
from chainer_vogn import distributed
from chainer_vogn import experiment
from chainer_vogn import metrics
from chainer_vogn import posterior as posterior_module
from chainer_vogn import report
from chainer_vogn.experiment import RunError

#: What the evaluation adds to :data:`chainer_vogn.metrics.CONVENTIONS`.
CONVENTIONS = {
    'predictive_samples': 'VOGN: T weight samples w_t = mu + sigma * eps_t; '
                          'MC dropout: T passes with dropout on and the mean '
                          'weights; Adam/SGD: one deterministic pass (T = 1 '
                          'whatever --mc-samples says); BatchNormalization '
                          'uses its running statistics; mc_samples in the '
                          'metrics is the T used',
    'sample_seeds': 'sample t draws its noise (eps_t or dropout masks) from '
                    'numpy.random.SeedSequence([seed, t]), so it does not '
                    'depend on which process computes it',
    'ood_inputs': 'holdout:A-B: test images of classes A..B of the run\'s '
                  'own data set, prepared as the run\'s; another data set: '
                  'its test images on the [0, 1] scale, standardised with the '
                  'run\'s training mean/std and enlarged to the run\'s image '
                  'size by pixel repetition',
}

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


def _forward(model, x, device, batchsize):
    """Logits of ``model`` on ``x`` in batches, on the host."""
    predictor = getattr(model, 'predictor', model)
    out = []
    for start in range(0, len(x), batchsize):
        y = predictor(device.send(x[start:start + batchsize]))
        out.append(backend.CpuDevice().send(y.array))
    return numpy.concatenate(out)


def _passes(model, method, inputs, device, batchsize):
    """Logits on each input in test mode, dropout on for 'dropout'."""
    cudnn = 'never' if method == 'dropout' else chainer.config.use_cudnn
    with chainer.using_config('train', False), \
            chainer.using_config('mc_dropout', method == 'dropout'), \
            chainer.using_config('use_cudnn', cudnn), \
            chainer.no_backprop_mode():
        return [_forward(model, x, device, batchsize) for x in inputs]


def _seed_dropout(seq, device):
    """Seed the generators F.dropout draws from (numpy's or CuPy's)."""
    numpy.random.seed(seq.generate_state(4))
    if device.xp is not numpy:
        device.xp.random.seed(int(seq.generate_state(1, numpy.uint64)[0]))


def iterate_samples(model, posterior, method, inputs, samples, seed=0,
                    device=None, batchsize=256):
    """Yield ``(t, logits)`` for each sample index t in ``samples``.

    Args:
        model: the link the posterior was saved from (an ``L.Classifier``,
            whose ``predictor`` gives the logits, or a bare predictor).
        posterior: a :class:`chainer_vogn.posterior.Posterior`.
        method: 'weights', 'dropout' or 'point', the ``sampling`` of the
            run's optimizer (:func:`chainer_vogn.experiment.optimizer_spec`).
        inputs: list of float32 arrays (N_k, ...) to predict.
        samples: iterable of sample indices t >= 0.
        seed (int): with t, the seed of sample t's noise.
        device: a Chainer device or its specifier (default: the CPU).
        batchsize (int): examples per forward pass.

    ``logits`` is a list with one float32 (N_k, C) array per input.
    MC dropout runs with cuDNN off on GPUs, as cuDNN's dropout masks ignore
    CuPy's seed.  Dropout reseeds NumPy's/CuPy's global generator.
    """
    if method not in experiment.SAMPLINGS:
        raise ValueError("method must be 'weights', 'dropout' or 'point', "
                         'got {!r}'.format(method))
    if batchsize < 1:
        raise ValueError('batchsize must be >= 1, got {}'.format(batchsize))
    device = chainer.get_device('@numpy' if device is None else device)
    model.to_device(device)
    if method != 'weights':
        posterior.load_into(model)
    for t in samples:
        if t < 0:
            raise ValueError('sample indices must be >= 0, got {}'.format(t))
        seq = numpy.random.SeedSequence([seed, t])
        if method == 'weights':
            posterior.load_into(model, numpy.random.default_rng(seq))
        elif method == 'dropout':
            _seed_dropout(seq, device)
        yield t, _passes(model, method, inputs, device, batchsize)


def sample_logits(model, posterior, method, inputs, samples, seed=0,
                  device=None, batchsize=256):
    """Logits of the given samples: one (len(samples), N_k, C) array per
    input (arguments as in :func:`iterate_samples`)."""
    samples = list(samples)
    if not samples:
        raise ValueError('samples must name at least one sample index')
    stacks = [[] for _ in inputs]
    for _, logits in iterate_samples(model, posterior, method, inputs,
                                     samples, seed, device, batchsize):
        for stack, y in zip(stacks, logits):
            stack.append(y)
    return [numpy.stack(stack) for stack in stacks]


def predict(model, posterior, method, inputs, n_samples, seed=0, device=None,
            batchsize=256, comm=None):
    """The predictive distribution on each array in ``inputs``.

    ``n_samples`` is T (use :func:`samples_used` for the run's method).
    With ``comm``, an mpi4py communicator of P processes, rank r computes
    samples r, r + P, ... and rank 0 gathers them; every rank must call this.

    Returns, on rank 0 (or without ``comm``), one :class:`Prediction` per
    input: ``probs`` (N, C), the mean of the T softmax outputs, and
    ``sample_probs`` (T, N, C) in sample order; None on the other ranks.
    """
    samples_used(method, n_samples)
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    mine = {t: [softmax(y) for y in logits] for t, logits in iterate_samples(
        model, posterior, method, inputs, range(rank, n_samples, size), seed,
        device, batchsize)}
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


def parse_ood(text):
    """None for 'none', else the OOD spec after checking its form."""
    if text == 'none':
        return None
    if text.startswith('holdout:'):
        datasets.parse_class_range(text[len('holdout:'):])
        return text
    if text not in datasets.DATASETS:
        raise ValueError(
            'unknown OOD set {!r}; choose none, one of {} or holdout:A-B '
            '(held-out classes of the run\'s own data set)'.format(
                text, ', '.join(datasets.DATASETS)))
    return text


def standardise_like(x, source, target):
    """Images standardised with ``source``'s mean/std, standardised with
    ``target``'s instead (both info dicts of :func:`datasets.get_dataset`).

    The [0, 1] images are recovered as x * std + mean in float64.
    """
    def channels(info, key):
        return numpy.asarray(info[key], numpy.float64)[:, None, None]
    raw = x.astype(numpy.float64) * channels(source, 'std') + \
        channels(source, 'mean')
    return ((raw - channels(target, 'mean')) /
            channels(target, 'std')).astype(numpy.float32)


def check_ood(spec, args, name='run'):
    """Check that the OOD set ``spec`` suits run ``name`` (options ``args``):
    a data set other than its own, or classes it was not trained on.
    Returns the classes of ``holdout:A-B``, else None."""
    if spec is None or not spec.startswith('holdout:'):
        if spec == args.dataset:
            raise RunError(
                '--ood {}: that is the data set run {} was trained on; use '
                '--ood holdout:A-B for its held-out classes'.format(spec,
                                                                   name))
        return None
    held = datasets.parse_class_range(spec[len('holdout:'):])
    if not args.classes:
        raise RunError(
            '--ood {}: run {} was trained on every class of {}, so no class '
            'is held out; train it with --classes (e.g. --classes 0-4 for '
            '--ood holdout:5-9) or choose another --ood'.format(
                spec, name, args.dataset))
    overlap = sorted(set(held) &
                     set(datasets.parse_class_range(args.classes)))
    if overlap:
        raise RunError(
            '--ood {}: classes {} of {} are in-distribution for run {} '
            '(trained with --classes {}); hold out only classes it was not '
            'trained on'.format(spec, overlap, args.dataset, name,
                                args.classes))
    return held


def load_ood(spec, args, info, name='run'):
    """Inputs (N, C, H, W) of the OOD set ``spec`` for run ``name``.

    ``args`` are the run's options (config.json as a Namespace) and ``info``
    its dataset_info.  ``holdout:A-B`` gives the test images of the held-out
    classes A..B of the run's data set, prepared exactly as the run's; a data
    set name gives that set's test images re-standardised with the run's
    mean/std (see :func:`standardise_like`).
    """
    held = check_ood(spec, args, name)
    if spec is None:
        return None
    if held is not None:
        _, test, full = datasets.get_dataset(
            args.dataset, data_dir=args.data_dir,
            allow_download=args.allow_download,
            image_size=experiment.image_size_for(args))
        if max(held) >= full['n_classes']:
            raise RunError('--ood {}: {} has only classes 0-{}'.format(
                spec, args.dataset, full['n_classes'] - 1))
        held_out = datasets.select_classes(test, held)
        return chainer.dataset.concat_examples(held_out)[0]
    _, test, ood_info = datasets.get_dataset(
        spec, data_dir=args.data_dir, allow_download=args.allow_download)
    size, native = info['image_size'], ood_info['image_size']
    if ood_info['in_channels'] != info['in_channels'] or size % native:
        raise RunError(
            '--ood {}: its images are {}x{}x{} but run {} takes {}x{}x{} '
            '(channels x height x width); choose an OOD set with the same '
            'number of channels and a size that divides {} (or '
            'holdout:A-B)'.format(spec, ood_info['in_channels'], native,
                                  native, name, info['in_channels'], size,
                                  size, size))
    x = chainer.dataset.concat_examples(test)[0]
    x = standardise_like(x, ood_info, info)
    factor = size // native
    return x.repeat(factor, axis=2).repeat(factor, axis=3)


class Run(object):
    """A train.py output folder: its options, posterior and sampling method.

    Raises RunError, naming the folder and the fix, when config.json or
    model.npz is missing or unreadable.
    """

    def __init__(self, path, name, data_dir=None):
        self.path, self.name = path, name
        files = {f: os.path.join(path, f) for f in ('config.json',
                                                     'model.npz')}
        if not os.path.isdir(path):
            raise RunError('run {}: no folder {}; pass the --out folder of a '
                           'train.py run'.format(name, path))
        missing = [f for f, p in files.items() if not os.path.isfile(p)]
        if missing:
            raise RunError(
                'run {}: {} has no {}; a finished train.py run writes '
                'config.json and model.npz into its --out folder, so pass '
                'such a folder (or let the run finish, with --resume)'.format(
                    name, path, ' or '.join(missing)))
        try:
            with open(files['config.json']) as f:
                self.config = json.load(f)
            self.posterior = posterior_module.load_posterior(
                files['model.npz'])
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as e:
            raise RunError('run {}: cannot read {}: {}'.format(name, path, e))
        self.args = argparse.Namespace(**self.config)
        if data_dir is not None:
            self.args.data_dir = data_dir
        try:
            self.spec = experiment.optimizer_spec(self.config.get('optimizer'))
        except ValueError as e:
            raise RunError('run {}: {}/config.json: {}'.format(name, path, e))
        self.method = self.spec.sampling

    def describe(self):
        classes = ' classes {}'.format(self.args.classes) \
            if self.args.classes else ''
        return '{} {} on {}{}'.format(
            self.spec.label, self.args.arch,
            self.args.dataset, classes)

    def build_model(self, info):
        """The run's L.Classifier holding its mean weights."""
        model = experiment.build_model(self.args, info)
        try:
            self.posterior.load_into(model)
        except ValueError as e:
            raise RunError(
                'run {}: {}/model.npz does not fit the model its config.json '
                'describes (--arch {}, {} classes of {}): {}. Pass '
                'config.json and model.npz of the same run'.format(
                    self.name, self.path, self.args.arch, info['n_classes'],
                    self.args.dataset, e))
        return model


def run_names(paths, names=None):
    """Report names of the runs: ``names`` (comma separated) or the folders'
    base names, which must be distinct."""
    if names is not None:
        result = [n.strip() for n in names.split(',')]
        if len(result) != len(paths):
            raise RunError('--names {} gives {} names for {} runs'.format(
                names, len(result), len(paths)))
    else:
        result = [os.path.basename(os.path.normpath(p)) for p in paths]
    bad = [n for n in result if not n or '/' in n]
    if bad or len(set(result)) != len(result):
        raise RunError(
            'run names {} must be distinct, non-empty and without "/"; pass '
            '--names a,b,...'.format(result))
    return result


def _report_entry(run, pred, ood_pred, labels, n_samples, n_bins):
    """The run dict of :func:`chainer_vogn.report.write_report`."""
    probs = pred.probs
    found = metrics.summarize(
        probs, labels, pred.sample_probs,
        None if ood_pred is None else ood_pred.probs,
        None if ood_pred is None else ood_pred.sample_probs, n_bins=n_bins)
    found['mc_samples'] = n_samples
    entropy = metrics.predictive_entropy(probs)
    wrong = probs.argmax(axis=1) != labels
    entry = {
        'name': run.name,
        'optimizer': run.spec.label,
        'metrics': found, 'probs': probs, 'labels': labels,
        'calibration': metrics.calibration(probs, labels, n_bins),
        'roc_misclassification': None, 'entropy_in': entropy,
    }
    if wrong.any() and not wrong.all():
        det = metrics.detection_scores(entropy[wrong], entropy[~wrong])
        entry['roc_misclassification'] = (det['fpr'], det['tpr'])
    if ood_pred is not None:
        entropy_ood = metrics.predictive_entropy(ood_pred.probs)
        det = metrics.detection_scores(entropy_ood, entropy)
        entry.update(ood_probs=ood_pred.probs, entropy_ood=entropy_ood,
                     roc_ood=(det['fpr'], det['tpr']))
    return entry


def evaluate(args):
    """All of evaluate.py: every run's predictive, metrics and the report.

    ``args`` has the options of evaluate.py.  Runs on every rank of the MPI
    job; rank 0 prints and writes.  Returns write_report's {kind: path} on
    rank 0, None elsewhere.
    """
    from mpi4py import MPI
    distributed.abort_on_uncaught_exception()
    comm = MPI.COMM_WORLD
    root = comm.rank == 0
    ood = parse_ood(args.ood)
    samples_used('weights', args.mc_samples)  # T >= 1, before any loading
    names = run_names(args.runs, args.names)
    runs = [Run(path, name, args.data_dir)
            for path, name in zip(args.runs, names)]
    for run in runs:
        check_ood(ood, run.args, run.name)
    device = experiment.select_device(args.device, comm)

    entries, used = [], {}
    for i, run in enumerate(runs):
        start = time.time()
        _, test, info = experiment.load_data(run.args)
        x, labels = chainer.dataset.concat_examples(test)
        x_ood = load_ood(ood, run.args, info, run.name)
        model = run.build_model(info)
        n_samples = used[run.name] = samples_used(run.method,
                                                  args.mc_samples)
        if root:
            print('[{}/{}] {}: {} ({}); {} test{} examples; T = {} ({}) on {} '
                  'process{}'.format(
                      i + 1, len(runs), run.name, run.describe(), run.path,
                      len(x), '' if x_ood is None else
                      ', {} OOD'.format(len(x_ood)), n_samples, run.method,
                      comm.size, 'es' if comm.size > 1 else ''), flush=True)
        inputs = [x] if x_ood is None else [x, x_ood]
        preds = predict(model, run.posterior, run.method, inputs, n_samples,
                        args.seed, device, args.batchsize, comm)
        if root:
            entry = _report_entry(run, preds[0], preds[1] if len(preds) > 1
                                  else None, labels, n_samples, args.ece_bins)
            entries.append(entry)
            m = entry['metrics']
            print('      accuracy {:.2f}%, NLL {:.3f}, ECE {:.3f}, OOD AUROC '
                  '{:.3f} ({:.1f} s)'.format(100 * m['accuracy'], m['nll'],
                                             m['ece'], m['ood_auroc'],
                                             time.time() - start), flush=True)
    if not root:
        return None
    meta = {'ood': args.ood, 'mc_samples': args.mc_samples,
            'T': used, 'seed': args.seed, 'ece_bins': args.ece_bins,
            'processes': comm.size, 'device': args.device,
            'runs': {run.name: run.path for run in runs}}
    written = report.write_report(entries, args.out, CONVENTIONS, meta)
    with open(written['markdown']) as f:
        print('\n' + f.read())
    print('report written to {}'.format(os.path.abspath(args.out)),
          flush=True)
    return written
