"""The evaluation behind evaluate.py: every run's predictive distribution
on its test set (and an out-of-distribution set), the metrics, the report.

The predictive of each run is :func:`chainer_vogn.predictive.predict`, the
core :func:`chainer_vogn.predict` uses too.
"""
import errno
import os
import sys
import tempfile
import time

import numpy

import chainer

from chainer_vogn import distributed
from chainer_vogn import metrics
from chainer_vogn import ood as ood_module
from chainer_vogn import predictive
from chainer_vogn import progress
from chainer_vogn import report
from chainer_vogn import run_setup
from chainer_vogn.errors import RunError
from chainer_vogn.files import Manifest
from chainer_vogn.files import refuse_a_file
from chainer_vogn.run_folder import Run

#: What the evaluation adds to :data:`chainer_vogn.metrics.CONVENTIONS`.
CONVENTIONS = {
    'predictive_samples': 'VOGN, IVON: T weight samples w_t = mu + sigma '
                          '* eps_t; '
                          'MC dropout: T passes with dropout on and the mean '
                          'weights; Adam/SGD: one deterministic pass (T = 1 '
                          'whatever --mc-samples says); BatchNormalization '
                          'uses its running statistics; mc_samples in the '
                          'metrics is the T used',
    'sample_seeds': 'sample t draws its noise (eps_t or dropout masks) from '
                    'numpy.random.SeedSequence([seed, t]), so it does not '
                    'depend on which process computes it; MC dropout draws '
                    'the masks of the test and the OOD set each from it, so '
                    'an image set gets the masks it gets when predicted '
                    'alone (chainer_vogn.predict)',
    'ood_inputs': 'holdout:A-B: test images of classes A..B of the run\'s '
                  'own data set, prepared as the run\'s; another data set: '
                  'its test images on the [0, 1] scale, standardised with the '
                  'run\'s training mean/std and enlarged to the run\'s image '
                  'size by pixel repetition',
}


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


def check_writable(folder):
    """Check, before any sample is computed, that the report can be written
    into ``folder`` (or that the folder can be made), leaving no trace: a
    byte written and synced, as a full disk takes an empty file."""
    refuse_a_file(folder)
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(errno.ENOTDIR,
                                     os.strerror(errno.ENOTDIR), existing)
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b'\0')
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as e:
        raise RunError('--out {}: cannot write the report there ({}); choose '
                       'a writable folder'.format(folder, e))


def warn_if_data_differ(runs):
    """Say so when the runs were tested on different data: their numbers
    then do not compare."""
    if len({run.data for run in runs}) > 1:
        sys.stderr.write(
            'warning: the runs were tested on different data ({}); their '
            'metrics do not compare\n'.format(', '.join(
                '{}: {}'.format(run.name, run.data) for run in runs)))


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
        'optimizer': run.spec.label, 'data': run.data,
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


def _on_unit_scale(x, info):
    """Standardised images back on the [0, 1] scale, for pictures."""
    mean, std = (numpy.asarray(info[k], numpy.float32)[:, None, None]
                 for k in ('mean', 'std'))
    return x * std + mean


def _gallery(run, info, x, labels, x_ood):
    """The gallery argument of report.write_report for ``run``'s data."""
    return {'images': _on_unit_scale(x, info), 'labels': labels,
            'class_names': run.classes, 'dataset': run.args.dataset,
            'ood_images': None if x_ood is None else
            _on_unit_scale(x_ood, info)}


def _same_test_set(gallery, run, labels):
    """Whether ``run`` was tested on the gallery's images (same data set,
    classes and so labels)."""
    return (run.args.dataset == gallery['dataset'] and
            list(run.classes) == list(gallery['class_names']) and
            numpy.array_equal(labels, gallery['labels']))


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
    ood = ood_module.parse_ood(args.ood)
    # T >= 1, checked before anything is loaded
    predictive.samples_used('weights', args.mc_samples)
    names = run_names(args.runs, args.names)
    runs = [Run(path, name, args.data_dir)
            for path, name in zip(args.runs, names)]
    for run in runs:
        ood_module.check_ood(ood, run.args, run.name)
    if root:
        check_writable(args.out)
        # Before any sample is computed: the figures it may draw.
        Manifest(args.out).refuse_foreign(
            [name for name in report.REPORT_FILES
             if ood is not None or name != 'roc_ood.png'])
        warn_if_data_differ(runs)
    device = run_setup.select_device(args.device, comm)
    style = progress.choose(args.progress, comm.rank)

    entries, used, gallery = [], {}, None
    for i, run in enumerate(runs):
        start = time.time()
        _, test, info = run_setup.load_data(run.args)
        x, labels = chainer.dataset.concat_examples(test)
        x_ood = ood_module.load_ood(ood, run.args, info, run.name)
        model = run.build_model(info)
        n_samples = used[run.name] = predictive.samples_used(
            run.method, args.mc_samples)
        if root:
            print('[{}/{}] {}: {} ({}); {} test{} examples; T = {} ({}) on {} '
                  'process{}'.format(
                      i + 1, len(runs), run.name, run.describe(), run.path,
                      len(x), '' if x_ood is None else
                      ', {} OOD'.format(len(x_ood)), n_samples, run.method,
                      comm.size, 'es' if comm.size > 1 else ''), flush=True)
        inputs = [x] if x_ood is None else [x, x_ood]
        # Rank 0's share of the samples, each a pass over every input.
        shown = progress.Progress(
            len(range(0, n_samples, comm.size)) *
            sum(len(a) for a in inputs), style, '      predicting', 'images')
        preds = predictive.predict(model, run.posterior, run.method, inputs,
                                   n_samples, args.seed, device,
                                   args.batchsize, comm, shown.advance)
        shown.close()
        if not root:
            continue
        entry = _report_entry(run, preds[0], preds[1] if len(preds) > 1
                              else None, labels, n_samples, args.ece_bins)
        entries.append(entry)
        if i == 0:
            gallery = _gallery(run, info, x, labels, x_ood)
        elif gallery is not None and not _same_test_set(gallery, run, labels):
            print('      gallery.png not drawn: run {} has other test images '
                  'than run {}'.format(run.name, runs[0].name), flush=True)
            gallery = None
        m = entry['metrics']
        print('      accuracy {}%, NLL {}, ECE {}, OOD AUROC {} ({:.1f} '
              's)'.format(report.format_value(m['accuracy'], '.2f', 100),
                          report.format_value(m['nll'], '.3f'),
                          report.format_value(m['ece'], '.3f'),
                          report.format_value(m['ood_auroc'], '.3f'),
                          time.time() - start), flush=True)
    if not root:
        return None
    meta = {'ood': args.ood, 'mc_samples': args.mc_samples,
            'T': used, 'seed': args.seed, 'ece_bins': args.ece_bins,
            'processes': comm.size, 'device': args.device,
            'runs': {run.name: run.path for run in runs}}
    written = report.write_report(entries, args.out, CONVENTIONS, meta,
                                  gallery)
    with open(written['markdown']) as f:
        print('\n' + f.read())
    print('report written to {}'.format(os.path.abspath(args.out)),
          flush=True)
    return written
