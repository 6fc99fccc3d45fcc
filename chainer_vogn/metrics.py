"""Evaluation metrics for Bayesian classifiers: accuracy, NLL, Brier score,
calibration (ECE/MCE), uncertainty scores and detection (AUROC, AUPR, FPR at
95% TPR) for out-of-distribution and misclassification detection.

Pure numpy and scikit-learn, so the numbers of a run can be checked without
Chainer.  ``probs`` is always the (N, C) predictive distribution, i.e. the
mean of the T Monte Carlo softmax outputs; ``sample_probs`` holds those T
outputs as a (T, N, C) array.  The conventions are spelled out in
:data:`CONVENTIONS`, which :mod:`chainer_vogn.report` copies into report.json.
"""
import numbers

import numpy as np
from sklearn import metrics as skm

#: Floor applied to the probability of the true label before taking its log.
NLL_FLOOR = 1e-12

#: Tolerance on the row sums of a probability array.
SUM_TOLERANCE = 1e-3

CONVENTIONS = {
    'probs': 'predictive probabilities = mean over the T Monte Carlo samples '
             'of the softmax outputs',
    'nll': 'mean over examples of -log p[label], with p clipped below at '
           '%g' % NLL_FLOOR,
    'brier': 'mean over examples of the sum over classes of '
             '(p - onehot(label))^2, range [0, 2]',
    'calibration': 'top-label confidence (max probability) against accuracy '
                   'of the argmax; n_bins equal-width bins over [0, 1], each '
                   '(lower, upper], the first also holding 0, so confidence '
                   '1.0 is counted in the last bin',
    'ece': 'sum over bins of (n_b / N) * |accuracy_b - confidence_b|',
    'mce': 'max over non-empty bins of |accuracy_b - confidence_b|',
    'entropy': 'predictive entropy of the mean distribution, natural log '
               '(nats), 0 log 0 = 0',
    'mutual_information': 'entropy of the mean minus mean of the entropies '
                          'of the T samples (BALD), nats, clipped at 0',
    'positive_class': 'positives are the examples to flag: out-of-'
                      'distribution examples (OOD detection) or misclassified '
                      'examples (misclassification detection)',
    'uncertainty_score': 'predictive entropy of the mean predictive '
                         'distribution, higher means more likely positive',
    'ood_auroc_mutual_information': 'OOD AUROC with the mutual information '
                                    'of the T samples as the score',
    'auroc': 'area under the ROC curve of positives vs negatives '
             '(sklearn roc_auc_score)',
    'aupr_out': 'average precision with the positives (OOD / misclassified) '
                'as the positive class and the uncertainty as score',
    'aupr_in': 'average precision with the negatives (in-distribution / '
               'correct) as the positive class and the negated uncertainty '
               'as score',
    'fpr95': 'smallest false positive rate at which the true positive rate '
             'is >= 0.95 (sklearn roc_curve, drop_intermediate=False)',
    'missing': 'NaN (null in JSON) where a metric is undefined, e.g. no OOD '
               'data or no misclassified example',
}

#: Keys of :func:`summarize`, in the order reports list them.
METRIC_NAMES = (
    'accuracy', 'nll', 'brier', 'ece', 'mce',
    'misclassification_auroc', 'misclassification_aupr_in',
    'misclassification_aupr_out', 'misclassification_fpr95',
    'ood_auroc', 'ood_aupr_in', 'ood_aupr_out', 'ood_fpr95',
    'ood_auroc_mutual_information',
    'mean_entropy_in', 'mean_entropy_ood', 'n_in', 'n_ood',
)

_DETECTION_KEYS = ('auroc', 'aupr_in', 'aupr_out', 'fpr_at_95_tpr')


def _check_probs(probs, name, ndim=2):
    """Return ``probs`` as a float64 array after checking it is a valid
    stack of probability rows of dimension ``ndim``."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != ndim:
        raise ValueError('%s must have %d dimensions, got shape %s'
                         % (name, ndim, p.shape))
    if p.shape[-2] == 0 or p.shape[-1] == 0 or p.size == 0:
        raise ValueError('%s must not be empty, got shape %s'
                         % (name, p.shape))
    if not np.all(np.isfinite(p)):
        raise ValueError('%s contains NaN or infinite values' % name)
    if np.any(p < 0):
        raise ValueError('%s contains negative probabilities' % name)
    worst = np.max(np.abs(p.sum(axis=-1) - 1.0))
    if worst > SUM_TOLERANCE:
        raise ValueError('%s rows must sum to 1 within %g, worst is off by %g'
                         % (name, SUM_TOLERANCE, worst))
    return p


def _check_labels(labels, probs, name='labels'):
    y = np.asarray(labels)
    n, c = probs.shape
    if y.shape != (n,):
        raise ValueError('%s must have shape (%d,) to match probs, got %s'
                         % (name, n, y.shape))
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError('%s must be integers, got dtype %s'
                         % (name, y.dtype))
    if np.any(y < 0) or np.any(y >= c):
        raise ValueError('%s must lie in [0, %d), got values in [%d, %d]'
                         % (name, c, y.min(), y.max()))
    return y.astype(np.int64)


def _check_scores(scores, name):
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError('%s must be a non-empty 1-D array, got shape %s'
                         % (name, s.shape))
    if not np.all(np.isfinite(s)):
        raise ValueError('%s contains NaN or infinite values' % name)
    return s


def _entropy(p):
    """Entropy in nats along the last axis, with 0 log 0 = 0."""
    return -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=-1)


def accuracy(probs, labels):
    """Fraction of examples whose argmax class equals the label."""
    p = _check_probs(probs, 'probs')
    y = _check_labels(labels, p)
    return float(np.mean(p.argmax(axis=1) == y))


def nll(probs, labels):
    """Mean negative log likelihood of the labels, in nats.

    The probability of the true label is clipped below at ``NLL_FLOOR``
    (1e-12), so one confidently wrong example costs at most about 27.6.
    """
    p = _check_probs(probs, 'probs')
    y = _check_labels(labels, p)
    p_true = p[np.arange(len(y)), y]
    return float(np.mean(-np.log(np.maximum(p_true, NLL_FLOOR))))


def brier(probs, labels):
    """Brier score: mean over examples of sum over classes of
    (p - onehot)^2 (the multi-class convention, range [0, 2])."""
    p = _check_probs(probs, 'probs')
    y = _check_labels(labels, p)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def calibration(probs, labels, n_bins=15):
    """Reliability-diagram statistics of the top-label confidence.

    Bins are ``n_bins`` equal-width intervals (lower, upper] over [0, 1], the
    first also holding 0; confidence exactly 1.0 is counted in the last bin
    and a value on a bin edge (0.4 with 5 bins) in the bin below it.

    Returns a dict with ``ece`` = sum_b (n_b / N) |acc_b - conf_b|, ``mce`` =
    max of |acc_b - conf_b| over non-empty bins, and per-bin arrays
    ``bin_lower``, ``bin_upper``, ``bin_confidence`` (mean confidence),
    ``bin_accuracy`` (NaN for empty bins) and ``bin_count``.
    """
    if (isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral)
            or n_bins < 1):
        raise ValueError('n_bins must be an integer >= 1, got %r' % (n_bins,))
    n_bins = int(n_bins)
    p = _check_probs(probs, 'probs')
    y = _check_labels(labels, p)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)

    # k / n_bins is the double nearest the decimal edge, so a confidence
    # written as 0.4 compares equal to the edge and lands in the lower bin.
    edges = np.arange(n_bins + 1) / n_bins
    # side='left' gives i with edges[i-1] < c <= edges[i], i.e. (lower, upper].
    index = np.clip(np.searchsorted(edges, confidence, side='left') - 1,
                    0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid='ignore', divide='ignore'):
        bin_conf = np.bincount(index, confidence, n_bins) / count
        bin_acc = np.bincount(index, correct, n_bins) / count
    filled = count > 0
    gap = np.abs(bin_acc[filled] - bin_conf[filled])
    return {
        'ece': float(np.sum(count[filled] / len(y) * gap)),
        'mce': float(np.max(gap)),
        'bin_lower': edges[:-1],
        'bin_upper': edges[1:],
        'bin_confidence': bin_conf,
        'bin_accuracy': bin_acc,
        'bin_count': count,
    }


def predictive_entropy(probs):
    """Entropy of each predictive distribution, in nats (0 log 0 = 0)."""
    return _entropy(_check_probs(probs, 'probs'))


def mutual_information(sample_probs):
    """BALD mutual information between prediction and weights, per example.

    ``sample_probs`` is (T, N, C).  Returns H(mean_t p_t) - mean_t H(p_t) in
    nats: zero when all samples agree, the epistemic part of the predictive
    entropy.  It is >= 0 in exact arithmetic; rounding negatives are clipped.
    """
    s = _check_probs(sample_probs, 'sample_probs', ndim=3)
    mi = _entropy(s.mean(axis=0)) - _entropy(s).mean(axis=0)
    return np.maximum(mi, 0.0)


def detection_scores(score_pos, score_neg):
    """How well an uncertainty score separates positives from negatives.

    ``score_pos`` are the scores of the examples to flag (out-of-distribution
    or misclassified), ``score_neg`` those of the others (in-distribution or
    correctly classified); higher score means more likely positive.

    Returns a dict: ``auroc``; ``aupr_out``, the average precision with the
    positives as positive class; ``aupr_in``, the average precision with the
    negatives as positive class and the negated score; ``fpr_at_95_tpr``, the
    smallest false positive rate with true positive rate >= 0.95; and the ROC
    curve ``fpr``, ``tpr`` (every threshold, ``drop_intermediate=False``).
    """
    pos = _check_scores(score_pos, 'score_pos')
    neg = _check_scores(score_neg, 'score_neg')
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    s = np.concatenate([pos, neg])
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    # tpr and fpr are non-decreasing, so the first index reaching 0.95
    # has the smallest fpr.
    return {
        'auroc': float(skm.roc_auc_score(y, s)),
        'aupr_in': float(skm.average_precision_score(1 - y, -s)),
        'aupr_out': float(skm.average_precision_score(y, s)),
        'fpr_at_95_tpr': float(fpr[np.argmax(tpr >= 0.95)]),
        'fpr': fpr,
        'tpr': tpr,
    }


def _detection_summary(prefix, score_pos, score_neg):
    """Flat ``<prefix>_auroc`` ... ``<prefix>_fpr95`` entries; NaN when one
    of the two groups is empty."""
    names = ('auroc', 'aupr_in', 'aupr_out', 'fpr95')
    if len(score_pos) == 0 or len(score_neg) == 0:
        return {'%s_%s' % (prefix, n): float('nan') for n in names}
    d = detection_scores(score_pos, score_neg)
    return {'%s_%s' % (prefix, n): d[k]
            for n, k in zip(names, _DETECTION_KEYS)}


def summarize(probs, labels, sample_probs=None, ood_probs=None,
              ood_sample_probs=None, n_bins=15, score='entropy'):
    """Every number of one evaluation, as a flat dict keyed by METRIC_NAMES.

    Misclassification detection flags the wrongly classified test examples,
    OOD detection flags the rows of ``ood_probs``; both use ``score`` as the
    uncertainty: ``'entropy'`` (predictive entropy) or ``'max_probability'``
    (1 - max probability).  ``ood_auroc_mutual_information`` needs
    ``sample_probs`` and ``ood_sample_probs`` with T > 1.  Undefined entries
    are NaN; ``n_in`` and ``n_ood`` count the examples.  With
    ``score='max_probability'`` pass a matching ``uncertainty_score``
    convention to :func:`chainer_vogn.report.write_report`.
    """
    if score not in ('entropy', 'max_probability'):
        raise ValueError("score must be 'entropy' or 'max_probability', "
                         'got %r' % (score,))
    p = _check_probs(probs, 'probs')
    y = _check_labels(labels, p)

    def uncertainty(r):
        return _entropy(r) if score == 'entropy' else 1.0 - r.max(axis=1)

    cal = calibration(p, y, n_bins)
    entropy_in = _entropy(p)
    u_in = uncertainty(p)
    correct = p.argmax(axis=1) == y
    out = {
        'accuracy': accuracy(p, y),
        'nll': nll(p, y),
        'brier': brier(p, y),
        'ece': cal['ece'],
        'mce': cal['mce'],
    }
    out.update(_detection_summary('misclassification', u_in[~correct],
                                  u_in[correct]))

    q = s = so = None
    if ood_probs is not None:
        q = _check_probs(ood_probs, 'ood_probs')
        if q.shape[1] != p.shape[1]:
            raise ValueError('ood_probs must have %d classes like probs, got '
                             '%d' % (p.shape[1], q.shape[1]))
    if sample_probs is not None:
        s = _check_probs(sample_probs, 'sample_probs', ndim=3)
        if s.shape[1:] != p.shape:
            raise ValueError('sample_probs must have shape (T, %d, %d) like '
                             'probs, got %s' % (p.shape + (s.shape,)))
    if ood_sample_probs is not None:
        so = _check_probs(ood_sample_probs, 'ood_sample_probs', ndim=3)
        if q is None or so.shape[1:] != q.shape:
            raise ValueError('ood_sample_probs must have shape (T, N_ood, C) '
                             'matching ood_probs, got %s' % (so.shape,))

    out.update(_detection_summary(
        'ood', [] if q is None else uncertainty(q), u_in))
    out['ood_auroc_mutual_information'] = float('nan')
    if s is not None and so is not None:
        if so.shape[0] != s.shape[0]:
            raise ValueError('ood_sample_probs must have T = %d samples '
                             'like sample_probs, got %d'
                             % (s.shape[0], so.shape[0]))
        if s.shape[0] > 1:
            out['ood_auroc_mutual_information'] = detection_scores(
                mutual_information(so), mutual_information(s))['auroc']

    out['mean_entropy_in'] = float(entropy_in.mean())
    out['mean_entropy_ood'] = (float(_entropy(q).mean()) if q is not None
                               else float('nan'))
    out['n_in'] = int(len(y))
    out['n_ood'] = 0 if q is None else int(len(q))
    return {k: out[k] for k in METRIC_NAMES}
