"""Write the evidence of an evaluation: tables (JSON, CSV, Markdown), ROC
curves, reliability diagrams, entropy histograms and the raw predictions.

Each file is written to a temporary file in the output folder and moved over
the old one with :func:`os.replace`, so a crash leaves either the previous
complete file or the new complete file, never half of one.  Figures use
matplotlib's Agg canvas directly (no pyplot, no display needed).
"""
import csv
import json
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from chainer_vogn import metrics
from chainer_vogn.files import Manifest
from chainer_vogn.files import atomic_write
from chainer_vogn.files import write_npz

DPI = 120
_REQUIRED = ('name', 'optimizer', 'metrics', 'probs', 'labels',
             'calibration', 'roc_misclassification', 'entropy_in')
#: Every file write_report may write.  It removes those of an earlier report
#: in the same folder that it does not write again, and no other file: only
#: those its manifest (:class:`chainer_vogn.files.Manifest`) says it wrote.
REPORT_FILES = ('report.json', 'report.csv', 'report.md', 'roc_ood.png',
                'roc_misclassification.png', 'reliability.png',
                'entropy_hist.png', 'gallery.png', 'predictions.npz')


def _plain(x):
    """JSON-ready copy of ``x``: numpy to Python, NaN and inf to None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _is_number(x):
    return isinstance(x, (int, float, np.integer, np.floating)) \
        and not isinstance(x, bool)


def format_value(x, spec, scale=1.0):
    """``x * scale`` formatted with ``spec``; '-' when undefined (None,
    NaN)."""
    if not _is_number(x) or not np.isfinite(x):
        return '-'
    return format(float(x) * scale, spec)


def _check_runs(runs):
    if not runs:
        raise ValueError('runs must be a non-empty list of dicts')
    seen = set()
    for i, run in enumerate(runs):
        missing = [k for k in _REQUIRED if k not in run]
        if missing:
            raise ValueError('runs[%d] lacks %s' % (i, ', '.join(missing)))
        name = run['name']
        if not isinstance(name, str) or not name or '/' in name:
            raise ValueError('runs[%d] name must be a non-empty str without '
                             '"/", got %r' % (i, name))
        if name in seen:
            raise ValueError('runs name %r appears twice' % name)
        seen.add(name)


def _metric_columns(runs):
    """METRIC_NAMES first, then any other metric keys, sorted."""
    extra = sorted({k for run in runs for k in run['metrics']}
                   - set(metrics.METRIC_NAMES))
    return list(metrics.METRIC_NAMES) + extra


def _save(fig, path):
    FigureCanvasAgg(fig)
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=DPI),
                  binary=True)
    fig.clear()
    return path


def _roc_figure(curves, title):
    """``curves``: [(legend label, (fpr, tpr))]."""
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot(1, 1, 1)
    for label, (fpr, tpr) in curves:
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], color='grey', linestyle='--', label='chance')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel('False positive rate')
    ax.set_ylabel('True positive rate')
    ax.set_title(title)
    ax.legend(loc='lower right')
    fig.tight_layout()
    return fig


def _reliability_figure(runs):
    n = len(runs)
    fig = Figure(figsize=(max(6.0, 4.0 * n), 5.5))
    grid = fig.add_gridspec(2, n, height_ratios=(3, 1))
    for j, run in enumerate(runs):
        cal = run['calibration']
        lower = np.asarray(cal['bin_lower'], float)
        upper = np.asarray(cal['bin_upper'], float)
        acc = np.asarray(cal['bin_accuracy'], float)
        conf = np.asarray(cal['bin_confidence'], float)
        count = np.asarray(cal['bin_count'])
        centre, width = (lower + upper) / 2, upper - lower
        filled = count > 0
        ax = fig.add_subplot(grid[0, j])
        ax.bar(centre[filled], acc[filled], width=width[filled],
               edgecolor='black', label='accuracy')
        ax.plot(centre[filled], conf[filled], '_', color='tab:red', ms=12,
                mew=2, label='mean confidence')
        ax.plot([0, 1], [0, 1], color='grey', linestyle='--')
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel('Accuracy')
        ax.set_title('%s\nECE %s' % (run['name'],
                                     format_value(cal.get('ece'), '.3f')))
        ax_count = fig.add_subplot(grid[1, j], sharex=ax)
        ax_count.bar(centre[filled], count[filled], width=width[filled],
                     color='tab:grey', edgecolor='black')
        ax_count.set_yscale('log')
        ax_count.yaxis.set_minor_formatter(NullFormatter())
        ax_count.set_xlabel('Confidence')
        ax_count.set_ylabel('Count')
    _legend_on_top(fig, ax)
    return fig


def _legend_on_top(fig, ax):
    """One legend for all panels, above them, where it hides no data."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc='upper center', ncol=len(labels),
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))


def _entropy_figure(runs):
    n = len(runs)
    fig = Figure(figsize=(max(6.0, 4.0 * n), 4.0))
    for j, run in enumerate(runs):
        ax = fig.add_subplot(1, n, j + 1)
        n_classes = np.shape(run['probs'])[1]
        bins = np.linspace(0.0, np.log(n_classes), 31)
        ax.hist(np.asarray(run['entropy_in']), bins=bins, density=True,
                alpha=0.6, label='in-distribution')
        if run.get('entropy_ood') is not None:
            ax.hist(np.asarray(run['entropy_ood']), bins=bins, density=True,
                    alpha=0.6, label='out-of-distribution')
        ax.set_xlabel('Predictive entropy (nats)')
        ax.set_ylabel('Density')
        ax.set_title(run['name'])
    _legend_on_top(fig, ax)
    return fig


def _gallery_rows(runs, gallery, per_group):
    """(title, image, label or None, key, index) of the gallery's rows: the
    test (and OOD) images of lowest and highest entropy, averaged over the
    runs, so that every run is shown on the same images."""
    rows = []
    for key, images, what in (('probs', gallery['images'], 'test'),
                              ('ood_probs', gallery.get('ood_images'),
                               'OOD')):
        if images is None:
            continue
        entropy = np.mean([metrics.predictive_entropy(run[key])
                           for run in runs], axis=0)
        order = np.argsort(entropy, kind='stable')
        for title, chosen in (('most certain', order[:per_group]),
                              ('least certain', order[::-1][:per_group])):
            for i in chosen:
                label = gallery['labels'][i] if what == 'test' else None
                rows.append(('%s %s #%d' % (what, title, i), images[i],
                             label, key, i))
    return rows


def _gallery_figure(runs, gallery, per_group=2):
    names = [str(c) for c in gallery['class_names']]
    rows = _gallery_rows(runs, gallery, per_group)
    n = len(runs)
    fig = Figure(figsize=(2.2 + 2.6 * n, 1.55 * len(rows) + 0.6))
    grid = fig.add_gridspec(len(rows), n + 1,
                            width_ratios=(0.75,) + (1,) * n)
    for r, (title, image, label, key, i) in enumerate(rows):
        ax = fig.add_subplot(grid[r, 0])
        image = np.clip(np.asarray(image, float), 0, 1)
        if image.shape[0] == 1:
            ax.imshow(image[0], cmap='gray', vmin=0, vmax=1)
        else:
            ax.imshow(image.transpose(1, 2, 0))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title if label is None else
                     '%s\nlabel %s' % (title, names[label]),
                     fontsize='small')
        for j, run in enumerate(runs):
            p = np.asarray(run[key][i], float)
            colors = ['tab:green' if k == label else 'tab:blue'
                      for k in range(len(p))]
            ax = fig.add_subplot(grid[r, j + 1])
            ax.bar(range(len(p)), p, color=colors)
            ax.set_ylim(0, 1)
            ax.set_xticks(range(len(p)))
            ax.set_xticklabels(names, fontsize='x-small')
            ax.tick_params(axis='y', labelsize='x-small')
            ax.set_title('%s: entropy %.2f' % (
                run['name'], metrics.predictive_entropy(p[None])[0]),
                fontsize='small')
    fig.suptitle('Predictive probabilities per class (green: true label); '
                 'images ranked by entropy averaged over the runs',
                 fontsize='medium')
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return fig


def _with_count(value, count):
    """An AUROC and, in brackets, how many positives it rests on."""
    text = format_value(value, '.3f')
    return text if text == '-' else '%s (n=%d)' % (text, count)


def _auroc_text(run, curve):
    """The AUROC of ``curve`` ('roc_ood' or 'roc_misclassification') with
    its count of positives, as the table and the ROC legends both write it."""
    m = run['metrics']
    if curve == 'roc_ood':
        return _with_count(m.get('ood_auroc'), m.get('n_ood', 0))
    wrong = int(np.sum(np.argmax(run['probs'], axis=1) !=
                       np.asarray(run['labels'])))
    return _with_count(m.get('misclassification_auroc'), wrong)


def _markdown(runs, conventions, meta):
    head = ('| Run | Optimizer | Data | Accuracy (%) ↑ | NLL ↓ | ECE ↓ '
            '| AUROC (OOD) ↑ | AUROC (misclassification) ↑ | Brier ↓ |')
    lines = [head, '|' + '---|' * 9]
    for run in runs:
        m = run['metrics']
        cells = [run['name'], run['optimizer'], run.get('data') or '-',
                 format_value(m.get('accuracy'), '.2f', 100.0),
                 format_value(m.get('nll'), '.3f'),
                 format_value(m.get('ece'), '.3f'),
                 _auroc_text(run, 'roc_ood'),
                 _auroc_text(run, 'roc_misclassification'),
                 format_value(m.get('brier'), '.3f')]
        cells = [str(c).replace('|', '\\|') for c in cells]
        lines.append('| ' + ' | '.join(cells) + ' |')
    bins = sorted({len(run['calibration']['bin_lower']) for run in runs})
    lines += [
        '',
        'Conventions: ECE over %s equal-width bins of top-label confidence, '
        'bins (lower, upper] with confidence 1.0 in the last bin. '
        'AUROC: positive class = out-of-distribution (OOD column) or '
        'misclassified (misclassification column); score = %s. '
        'n = the number of positives (OOD or misclassified test examples) '
        'an AUROC rests on. ↑/↓: higher/lower is better. '
        'NLL in nats; Brier = sum over classes, mean over examples. '
        '"-" = undefined.'
        % ('/'.join(str(b) for b in bins), conventions['uncertainty_score']),
    ]
    if meta:
        lines += ['', 'Setup: ' + ', '.join('%s = %s' % (k, v)
                                            for k, v in meta.items())]
    return '\n'.join(lines) + '\n'


def write_report(runs, out_dir, conventions=None, meta=None, gallery=None):
    """Write report.json, report.csv, report.md, the figures and
    predictions.npz for ``runs`` into ``out_dir`` (created if needed, and
    removed again if a failure leaves it empty).

    Each run is a dict with ``name``, ``optimizer``, ``metrics`` (from
    :func:`metrics.summarize`), ``probs``, ``labels``, ``calibration`` (from
    :func:`metrics.calibration`), ``roc_misclassification`` ((fpr, tpr) or
    None), ``entropy_in`` and optionally ``ood_probs``, ``roc_ood``,
    ``entropy_ood`` and ``data`` (its data set and classes).
    ``conventions`` extends or overrides :data:`metrics.CONVENTIONS`;
    ``meta`` (T, seeds, sizes, ...) is copied into report.json and
    report.md.  ``gallery``, when given, draws
    gallery.png: a dict of the runs' common test ``images`` (N, C, H, W) on
    the [0, 1] scale, their ``labels``, ``class_names`` and optionally
    ``ood_images`` (the rows of every run's ``ood_probs``).  Returns {kind:
    path} of what was written; the ROC figures are skipped when no run has
    that curve.  Files of :data:`REPORT_FILES` in ``out_dir`` that this
    report does not write are removed if an earlier report wrote them, so no
    figure of it is left; RunError, before anything is written, if a file
    it would write is there and not written by it.
    """
    _check_runs(runs)
    conv = dict(metrics.CONVENTIONS)
    conv.update(conventions or {})
    meta = dict(meta or {})
    created = not os.path.exists(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    try:
        return _write_report(runs, out_dir, conv, meta, gallery)
    except BaseException:
        # A full disk: leave no empty folder behind.
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)
        raise


def _write_report(runs, out_dir, conv, meta, gallery):
    """write_report's body, into the existing ``out_dir``."""
    curves = {key: [('%s: AUROC %s' % (run['name'], _auroc_text(run, key)),
                     run[key]) for run in runs if run.get(key) is not None]
              for key in ('roc_ood', 'roc_misclassification')}
    names = ['report.json', 'report.csv', 'report.md'] + \
        [key + '.png' for key in sorted(curves) if curves[key]] + \
        ['reliability.png', 'entropy_hist.png'] + \
        (['gallery.png'] if gallery is not None else []) + ['predictions.npz']
    manifest = Manifest(out_dir)
    manifest.refuse_foreign(names)
    manifest.claim(names)

    def path(name):
        return os.path.join(out_dir, name)

    columns = _metric_columns(runs)
    written = {}

    doc = {
        'conventions': conv,
        'meta': meta,
        'metric_names': columns,
        'runs': [{'name': run['name'], 'optimizer': run['optimizer'],
                  'data': run.get('data'), 'metrics': run['metrics'],
                  'calibration': run['calibration']} for run in runs],
    }
    written['json'] = atomic_write(
        path('report.json'),
        lambda f: json.dump(_plain(doc), f, indent=2, allow_nan=False))

    def write_csv(f):
        w = csv.writer(f, lineterminator='\n')
        w.writerow(['name', 'optimizer', 'data'] + columns)
        for run in runs:
            row = []
            for k in columns:
                v = _plain(run['metrics'].get(k))
                row.append('' if v is None else v)
            w.writerow([run['name'], run['optimizer'],
                        run.get('data') or ''] + row)
    written['csv'] = atomic_write(path('report.csv'), write_csv)

    text = _markdown(runs, conv, meta)
    written['markdown'] = atomic_write(path('report.md'),
                                        lambda f: f.write(text))

    for key, title in (('roc_ood', 'Out-of-distribution detection'),
                       ('roc_misclassification',
                        'Misclassification detection')):
        if curves[key]:
            written[key] = _save(_roc_figure(curves[key], title),
                                 path(key + '.png'))
    written['reliability'] = _save(_reliability_figure(runs),
                                   path('reliability.png'))
    written['entropy_hist'] = _save(_entropy_figure(runs),
                                    path('entropy_hist.png'))
    if gallery is not None:
        written['gallery'] = _save(_gallery_figure(runs, gallery),
                                   path('gallery.png'))

    arrays = {}
    for run in runs:
        name = run['name']
        arrays[name + '/probs'] = np.asarray(run['probs'])
        arrays[name + '/labels'] = np.asarray(run['labels'])
        if run.get('ood_probs') is not None:
            arrays[name + '/ood_probs'] = np.asarray(run['ood_probs'])
    write_npz(path('predictions.npz'), arrays, compressed=True)
    written['predictions'] = path('predictions.npz')
    for name in REPORT_FILES:
        if name not in names:
            manifest.remove(name)
    return written
