"""Metrics against values worked out by hand and against scikit-learn."""
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from chainer_vogn import metrics

# Four examples, three classes.
#   row  probs               label  argmax  correct  confidence
#   0    [0.5, 0.25, 0.25]   0      0       yes      0.5
#   1    [0.1, 0.8,  0.1 ]   1      1       yes      0.8
#   2    [0.2, 0.2,  0.6 ]   0      2       no       0.6
#   3    [1.0, 0.0,  0.0 ]   0      0       yes      1.0
PROBS = np.array([[0.5, 0.25, 0.25],
                  [0.1, 0.8, 0.1],
                  [0.2, 0.2, 0.6],
                  [1.0, 0.0, 0.0]])
LABELS = np.array([0, 1, 0, 0])


def test_accuracy_by_hand():
    # 3 of 4 correct.
    assert metrics.accuracy(PROBS, LABELS) == 0.75


def test_nll_by_hand():
    # p[label] = 0.5, 0.8, 0.2, 1.0
    # -(log 0.5 + log 0.8 + log 0.2 + log 1) / 4
    #   = (log 2 + log 1.25 + log 5 + 0) / 4 = log(12.5) / 4 = 0.631432...
    assert metrics.nll(PROBS, LABELS) == pytest.approx(math.log(12.5) / 4,
                                                       rel=1e-12)


def test_nll_clips_at_floor():
    # p[label] = 0 -> -log(1e-12) = 27.631...; the other example costs 0.
    probs = [[1.0, 0.0], [1.0, 0.0]]
    assert metrics.nll(probs, np.array([1, 0])) == pytest.approx(
        -math.log(1e-12) / 2, rel=1e-12)


def test_brier_by_hand():
    # row 0: (0.5-1)^2 + 0.25^2 + 0.25^2 = 0.25 + 0.0625 + 0.0625 = 0.375
    # row 1: 0.1^2 + (0.8-1)^2 + 0.1^2   = 0.01 + 0.04 + 0.01     = 0.06
    # row 2: (0.2-1)^2 + 0.2^2 + 0.6^2   = 0.64 + 0.04 + 0.36     = 1.04
    # row 3: 0
    # mean = (0.375 + 0.06 + 1.04 + 0) / 4 = 1.475 / 4 = 0.36875
    assert metrics.brier(PROBS, LABELS) == pytest.approx(0.36875, rel=1e-12)


def test_calibration_by_hand_with_edges_and_one():
    # 5 bins: [0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]
    # conf 0.5 -> bin 2; 0.6 is an upper edge -> bin 2 (not 3);
    # 0.8 is an upper edge -> bin 3 (not 4); 1.0 -> bin 4 (the last).
    # bin 2: conf (0.5+0.6)/2 = 0.55, acc (1+0)/2 = 0.5, gap 0.05, n 2
    # bin 3: conf 0.8, acc 1, gap 0.2, n 1
    # bin 4: conf 1.0, acc 1, gap 0,   n 1
    # ECE = 2/4*0.05 + 1/4*0.2 + 1/4*0 = 0.025 + 0.05 = 0.075; MCE = 0.2
    cal = metrics.calibration(PROBS, LABELS, n_bins=5)
    assert cal['ece'] == pytest.approx(0.075, abs=1e-12)
    assert cal['mce'] == pytest.approx(0.2, abs=1e-12)
    np.testing.assert_array_equal(cal['bin_count'], [0, 0, 2, 1, 1])
    np.testing.assert_allclose(cal['bin_lower'], [0, 0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(cal['bin_upper'], [0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(cal['bin_confidence'][2:], [0.55, 0.8, 1.0])
    np.testing.assert_allclose(cal['bin_accuracy'][2:], [0.5, 1.0, 1.0])
    assert np.all(np.isnan(cal['bin_accuracy'][:2]))


def test_calibration_confidence_one_is_counted():
    # Two confident examples, one right and one wrong, both conf 1.0:
    # last bin has n 2, acc 0.5, conf 1 -> ECE = 0.5 (dropping them gives 0).
    probs = [[1.0, 0.0], [1.0, 0.0]]
    cal = metrics.calibration(probs, np.array([0, 1]), n_bins=10)
    assert cal['bin_count'][-1] == 2
    assert cal['bin_count'].sum() == 2
    assert cal['ece'] == pytest.approx(0.5)
    # Rows may sum to 1 within 1e-3, so a confidence may exceed 1 slightly;
    # it still belongs to the last bin.
    cal = metrics.calibration([[1.0005, 0.0]], np.array([0]), n_bins=10)
    np.testing.assert_array_equal(cal['bin_count'], [0] * 9 + [1])


def test_calibration_boundary_lands_in_lower_bin():
    # conf 0.4 with 5 bins belongs to (0.2, 0.4], bin 1; correct, so
    # ECE = |1 - 0.4| = 0.6.
    cal = metrics.calibration([[0.4, 0.3, 0.3]], np.array([0]), n_bins=5)
    np.testing.assert_array_equal(cal['bin_count'], [0, 1, 0, 0, 0])
    assert cal['ece'] == pytest.approx(0.6)


@pytest.mark.parametrize('n_bins', [0, -3, 2.5, True])
def test_calibration_rejects_bad_n_bins(n_bins):
    with pytest.raises(ValueError, match='n_bins'):
        metrics.calibration(PROBS, LABELS, n_bins=n_bins)


def test_predictive_entropy_by_hand():
    # row 0: -(0.5 log 0.5 + 2 * 0.25 log 0.25) = 0.5 log 2 + log 2
    # row 1: -(2 * 0.1 log 0.1 + 0.8 log 0.8) = 0.2 log 10 + 0.8 log 1.25
    # row 2: -(2 * 0.2 log 0.2 + 0.6 log 0.6) = 0.4 log 5 + 0.6 log(5/3)
    # row 3: 1 log 1 + 0 log 0 = 0
    expected = [1.5 * math.log(2),
                0.2 * math.log(10) + 0.8 * math.log(1.25),
                0.4 * math.log(5) + 0.6 * math.log(5 / 3),
                0.0]
    np.testing.assert_allclose(metrics.predictive_entropy(PROBS), expected,
                               rtol=1e-12, atol=1e-15)


def test_mutual_information_zero_when_samples_agree():
    samples = np.stack([PROBS] * 4)
    np.testing.assert_array_equal(metrics.mutual_information(samples),
                                  np.zeros(4))
    # Averaging 7 equal rows is not exact in floating point; unclipped, some
    # of these come out around -2e-16.
    rows = np.random.RandomState(0).dirichlet(np.ones(3), size=20)
    mi = metrics.mutual_information(np.stack([rows] * 7))
    assert np.all(mi >= 0) and np.all(mi < 1e-12)


def test_mutual_information_by_hand():
    # Sample 1 [0.5, 0.5] (H = log 2), sample 2 [1, 0] (H = 0).
    # Mean [0.75, 0.25]: H = 0.75 log(4/3) + 0.25 log 4 = 0.562335...
    # MI = 0.562335 - (log 2 + 0) / 2 = 0.562335 - 0.346574 = 0.215762...
    # Second example: samples [1, 0] and [0, 1] -> H(mean) = log 2, MI = log 2.
    samples = np.array([[[0.5, 0.5], [1.0, 0.0]],
                        [[1.0, 0.0], [0.0, 1.0]]])
    expected = [0.75 * math.log(4 / 3) + 0.25 * math.log(4)
                - 0.5 * math.log(2),
                math.log(2)]
    mi = metrics.mutual_information(samples)
    np.testing.assert_allclose(mi, expected, rtol=1e-12)
    assert mi[0] == pytest.approx(0.215762, abs=1e-6)


def test_detection_perfect_and_reversed():
    good = metrics.detection_scores([0.9, 0.8, 0.7], [0.1, 0.2])
    assert good['auroc'] == 1.0
    assert good['fpr_at_95_tpr'] == 0.0
    assert good['aupr_out'] == 1.0
    assert good['aupr_in'] == 1.0
    bad = metrics.detection_scores([0.1, 0.2], [0.9, 0.8, 0.7])
    assert bad['auroc'] == 0.0
    # Every negative must be flagged before every positive is.
    assert bad['fpr_at_95_tpr'] == 1.0


def test_detection_by_hand_with_overlap():
    # pos 0.3, 0.8; neg 0.1, 0.5.  Pairs pos > neg: (0.3>0.1) (0.8>0.1)
    # (0.8>0.5) but not (0.3>0.5) -> AUROC 3/4.
    # TPR >= 0.95 needs threshold 0.3, which flags neg 0.5 -> FPR 1/2.
    # Ranked by score: 0.8 pos, 0.5 neg, 0.3 pos, 0.1 neg:
    # AP_out = (1/1 + 2/3) / 2 = 5/6.
    # Ranked by -score with negatives as class: 0.1 neg, 0.3 pos, 0.5 neg:
    # AP_in = (1/1 + 2/3) / 2 = 5/6.
    d = metrics.detection_scores([0.3, 0.8], [0.1, 0.5])
    assert d['auroc'] == pytest.approx(0.75)
    assert d['fpr_at_95_tpr'] == pytest.approx(0.5)
    assert d['aupr_out'] == pytest.approx(5 / 6)
    assert d['aupr_in'] == pytest.approx(5 / 6)


def test_detection_against_sklearn():
    rng = np.random.RandomState(0)
    # Rounded so that there are ties between and within the groups.
    pos = np.round(rng.normal(1.0, 1.0, size=300), 1)
    neg = np.round(rng.normal(0.0, 1.0, size=500), 1)
    y = np.r_[np.ones(300), np.zeros(500)]
    s = np.r_[pos, neg]
    d = metrics.detection_scores(pos, neg)
    assert d['auroc'] == pytest.approx(skm.roc_auc_score(y, s), rel=1e-12)
    assert d['aupr_out'] == pytest.approx(
        skm.average_precision_score(y, s), rel=1e-12)
    assert d['aupr_in'] == pytest.approx(
        skm.average_precision_score(1 - y, -s), rel=1e-12)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_array_equal(d['fpr'], fpr)
    np.testing.assert_array_equal(d['tpr'], tpr)
    assert d['fpr_at_95_tpr'] == fpr[tpr >= 0.95].min()
    # Brute force: the fraction of negatives at or above the highest
    # threshold that still flags 95% of the positives.
    t = max(v for v in np.unique(s) if np.mean(pos >= v) >= 0.95)
    assert d['fpr_at_95_tpr'] == pytest.approx(np.mean(neg >= t))


def test_summarize_matches_parts():
    rng = np.random.RandomState(1)
    samples = rng.dirichlet(np.ones(4) * 0.5, size=(5, 60))
    ood_samples = rng.dirichlet(np.ones(4) * 2.0, size=(5, 40))
    probs, ood = samples.mean(0), ood_samples.mean(0)
    labels = rng.randint(0, 4, size=60)
    s = metrics.summarize(probs, labels, samples, ood, ood_samples, n_bins=10)
    assert tuple(s) == metrics.METRIC_NAMES
    assert s['accuracy'] == metrics.accuracy(probs, labels)
    assert s['nll'] == metrics.nll(probs, labels)
    assert s['brier'] == metrics.brier(probs, labels)
    cal = metrics.calibration(probs, labels, 10)
    assert (s['ece'], s['mce']) == (cal['ece'], cal['mce'])
    h_in = metrics.predictive_entropy(probs)
    h_ood = metrics.predictive_entropy(ood)
    wrong = probs.argmax(1) != labels
    mis = metrics.detection_scores(h_in[wrong], h_in[~wrong])
    det = metrics.detection_scores(h_ood, h_in)
    for key, name in (('auroc', 'auroc'), ('aupr_in', 'aupr_in'),
                      ('aupr_out', 'aupr_out'), ('fpr_at_95_tpr', 'fpr95')):
        assert s['misclassification_' + name] == mis[key]
        assert s['ood_' + name] == det[key]
    assert s['ood_auroc_mutual_information'] == metrics.detection_scores(
        metrics.mutual_information(ood_samples),
        metrics.mutual_information(samples))['auroc']
    assert s['mean_entropy_in'] == pytest.approx(h_in.mean())
    assert s['mean_entropy_ood'] == pytest.approx(h_ood.mean())
    assert (s['n_in'], s['n_ood']) == (60, 40)


def test_summarize_max_probability_score():
    # 1 - max probability: misclassified row 2 has 0.4, the correct rows
    # 0.5, 0.2, 0.0 -> it beats 2 of 3 -> AUROC 2/3.
    s = metrics.summarize(PROBS, LABELS, score='max_probability')
    assert s['misclassification_auroc'] == pytest.approx(2 / 3)


def test_summarize_without_ood_or_samples_gives_nan():
    s = metrics.summarize(PROBS, LABELS)
    for key in ('ood_auroc', 'ood_aupr_in', 'ood_aupr_out', 'ood_fpr95',
                'ood_auroc_mutual_information', 'mean_entropy_ood'):
        assert math.isnan(s[key])
    assert s['n_ood'] == 0
    # Entropies: misclassified row 2 = 0.950..., correct rows 1.040, 0.639,
    # 0 -> it beats 2 of 3 -> AUROC 2/3.
    assert s['misclassification_auroc'] == pytest.approx(2 / 3)


def test_summarize_all_correct_gives_nan_misclassification():
    s = metrics.summarize(PROBS[:2], LABELS[:2])
    assert math.isnan(s['misclassification_auroc'])
    assert s['accuracy'] == 1.0


def test_summarize_single_sample_has_no_mutual_information():
    s = metrics.summarize(PROBS, LABELS, PROBS[None], PROBS, PROBS[None])
    assert math.isnan(s['ood_auroc_mutual_information'])
    assert s['ood_auroc'] == pytest.approx(0.5)


@pytest.mark.parametrize('probs, labels, arg', [
    (PROBS[:, :2], LABELS, 'probs'),                 # rows do not sum to 1
    (PROBS * np.nan, LABELS, 'probs'),               # NaN
    (PROBS[0], LABELS, 'probs'),                     # 1-D
    (np.tile([1.5, -0.5, 0.0], (4, 1)), LABELS, 'probs'),  # negative
    (PROBS, LABELS[:3], 'labels'),                   # length mismatch
    (PROBS, np.array([0, 1, 3, 0]), 'labels'),       # out of range
    (PROBS, np.array([0, 1, -1, 0]), 'labels'),      # negative label
    (PROBS, LABELS.astype(float), 'labels'),         # not integers
])
def test_validation_names_the_argument(probs, labels, arg):
    for fn in (metrics.accuracy, metrics.nll, metrics.brier,
               metrics.calibration, metrics.summarize):
        with pytest.raises(ValueError, match=arg):
            fn(probs, labels)


def test_validation_of_other_arguments():
    with pytest.raises(ValueError, match='sample_probs'):
        metrics.mutual_information(PROBS)
    with pytest.raises(ValueError, match='sample_probs'):
        metrics.summarize(PROBS, LABELS, sample_probs=np.stack([PROBS[:3]]))
    with pytest.raises(ValueError, match='ood_probs'):
        metrics.summarize(PROBS, LABELS, ood_probs=[[0.5, 0.5]])
    with pytest.raises(ValueError, match='ood_sample_probs'):
        metrics.summarize(PROBS, LABELS, ood_sample_probs=PROBS[None])
    with pytest.raises(ValueError, match='score'):
        metrics.summarize(PROBS, LABELS, score='variance')
    with pytest.raises(ValueError, match='score_pos'):
        metrics.detection_scores([], [0.1])
    with pytest.raises(ValueError, match='score_neg'):
        metrics.detection_scores([0.1], [np.inf])


def test_conventions_cover_the_detection_keys():
    for key in ('positive_class', 'uncertainty_score', 'auroc', 'aupr_in',
                'aupr_out', 'fpr95', 'ece', 'nll', 'brier'):
        assert isinstance(metrics.CONVENTIONS[key], str)
