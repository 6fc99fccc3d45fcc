"""write_report writes every file, readable and complete, and atomically."""
import csv
import hashlib
import json
import os

import numpy as np
import pytest

from chainer_vogn import files, metrics, report
from chainer_vogn.errors import RunError

PNGS = ('roc_ood.png', 'roc_misclassification.png', 'reliability.png',
        'entropy_hist.png')


def fake_run(name, optimizer, seed, with_ood=True, n=80, n_ood=50, c=5):
    """A run built the way the evaluation script builds one, from random
    Dirichlet samples standing in for T = 4 Monte Carlo softmax outputs."""
    rng = np.random.RandomState(seed)
    samples = rng.dirichlet(np.ones(c) * 0.3, size=(4, n))
    labels = rng.randint(0, c, size=n)
    probs = samples.mean(0)
    ood_samples = rng.dirichlet(np.ones(c), size=(4, n_ood)) if with_ood \
        else None
    ood = ood_samples.mean(0) if with_ood else None
    h_in = metrics.predictive_entropy(probs)
    wrong = probs.argmax(1) != labels
    mis = metrics.detection_scores(h_in[wrong], h_in[~wrong])
    run = {
        'name': name, 'optimizer': optimizer,
        'metrics': metrics.summarize(probs, labels, samples, ood,
                                     ood_samples),
        'probs': probs, 'labels': labels, 'ood_probs': ood,
        'calibration': metrics.calibration(probs, labels),
        'roc_misclassification': (mis['fpr'], mis['tpr']),
        'roc_ood': None, 'entropy_in': h_in, 'entropy_ood': None,
    }
    if with_ood:
        h_ood = metrics.predictive_entropy(ood)
        det = metrics.detection_scores(h_ood, h_in)
        run['roc_ood'] = (det['fpr'], det['tpr'])
        run['entropy_ood'] = h_ood
    return run


@pytest.fixture
def runs():
    return [fake_run('vogn', 'VOGN', 0), fake_run('adam', 'Adam', 1),
            fake_run('mc-dropout', 'MC dropout', 2, with_ood=False)]


def png_size(path):
    """Width and height from the IHDR chunk, after checking the signature."""
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n', path
    assert head[12:16] == b'IHDR', path
    return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24],
                                                              'big')


def test_write_report_writes_everything(runs, tmp_path):
    out = tmp_path / 'new' / 'report'
    meta = {'T': 4, 'seeds': [0, 1, 2], 'n_test': 80}
    written = report.write_report(runs, str(out), meta=meta,
                                  conventions={'dataset': 'fake'})
    names = ['report.json', 'report.csv', 'report.md', 'predictions.npz']
    names += list(PNGS)
    # no temporary files; the manifest of what it wrote
    assert sorted(os.listdir(out)) == sorted(names + [files.MANIFEST])
    assert sorted(os.path.basename(p) for p in written.values()) == \
        sorted(names)

    doc = json.loads((out / 'report.json').read_text())
    assert [r['name'] for r in doc['runs']] == ['vogn', 'adam', 'mc-dropout']
    for run, saved in zip(runs, doc['runs']):
        assert saved['optimizer'] == run['optimizer']
        assert set(saved['metrics']) == set(metrics.METRIC_NAMES)
        assert saved['metrics']['accuracy'] == run['metrics']['accuracy']
        for key, value in run['metrics'].items():
            if np.isnan(value):
                assert saved['metrics'][key] is None, key  # NaN -> null
            else:
                assert saved['metrics'][key] == value, key
        assert saved['calibration']['bin_count'] == \
            run['calibration']['bin_count'].tolist()
    assert doc['runs'][2]['metrics']['ood_auroc'] is None
    for key, text in metrics.CONVENTIONS.items():
        assert doc['conventions'][key] == text
    assert doc['conventions']['dataset'] == 'fake'
    assert doc['meta'] == meta

    with open(out / 'report.csv', newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['name', 'optimizer', 'data'] + \
        list(metrics.METRIC_NAMES)
    assert [r[0] for r in rows[1:]] == ['vogn', 'adam', 'mc-dropout']
    col = rows[0].index('accuracy')
    for run, row in zip(runs, rows[1:]):
        assert len(row) == len(rows[0])
        assert float(row[col]) == pytest.approx(run['metrics']['accuracy'])
    assert rows[3][rows[0].index('ood_auroc')] == ''

    md = (out / 'report.md').read_text()
    table = [line for line in md.splitlines() if line.startswith('|')]
    assert len(table) == 2 + len(runs)
    assert 'AUROC (OOD)' in table[0] and 'ECE' in table[0]
    for run, line in zip(runs, table[2:]):
        assert line.startswith('| %s | %s |' % (run['name'],
                                                run['optimizer']))
        assert '%.2f' % (100 * run['metrics']['accuracy']) in line
    assert '15 equal-width bins' in md
    assert 'out-of-distribution' in md

    for name in PNGS:
        width, height = png_size(out / name)
        assert 300 <= width <= 3000 and 300 <= height <= 3000, name
    import matplotlib.image
    image = matplotlib.image.imread(str(out / 'reliability.png'))
    assert image.ndim == 3 and image.std() > 0  # something was drawn

    with np.load(out / 'predictions.npz') as npz:
        assert sorted(npz.files) == sorted([
            'vogn/probs', 'vogn/labels', 'vogn/ood_probs',
            'adam/probs', 'adam/labels', 'adam/ood_probs',
            'mc-dropout/probs', 'mc-dropout/labels'])
        np.testing.assert_array_equal(npz['adam/probs'], runs[1]['probs'])
        np.testing.assert_array_equal(npz['adam/labels'], runs[1]['labels'])


def test_no_ood_figure_without_ood_data(runs, tmp_path):
    written = report.write_report(runs[2:], str(tmp_path))
    assert 'roc_ood' not in written
    assert not (tmp_path / 'roc_ood.png').exists()
    assert (tmp_path / 'roc_misclassification.png').exists()
    assert (tmp_path / 'entropy_hist.png').exists()


def test_new_report_leaves_no_file_of_an_earlier_one(runs, tmp_path):
    report.write_report(runs, str(tmp_path))
    assert (tmp_path / 'roc_ood.png').exists()
    (tmp_path / 'notes.txt').write_text('mine')
    written = report.write_report(runs[2:], str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(p) for p in written.values()] +
        ['notes.txt', files.MANIFEST])
    assert 'roc_ood.png' not in os.listdir(tmp_path)


def _hashes(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in os.listdir(folder)}


def test_files_it_did_not_write_are_neither_removed_nor_overwritten(
        runs, tmp_path):
    """The user's figures named like the report's and their own files
    stay bitwise: a report without them leaves them, and one that would
    overwrite them is refused before it writes anything."""
    mine = {'roc_ood.png': b'my figure', 'thesis.tex': b'\\chapter{}',
            'gallery.png': b'my gallery'}
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data)
    for _ in range(2):
        report.write_report(runs[2:], str(tmp_path))
    hashes = _hashes(tmp_path)
    for name, data in mine.items():
        assert (tmp_path / name).read_bytes() == data
    with pytest.raises(RunError, match=r'roc_ood.png is not written there '
                       r'by chainer_vogn .*move it away'):
        report.write_report(runs, str(tmp_path))
    assert _hashes(tmp_path) == hashes


def test_failed_write_keeps_the_old_report(runs, tmp_path, monkeypatch):
    report.write_report(runs, str(tmp_path))
    good = (tmp_path / 'report.json').read_bytes()
    json.loads(good)

    def broken_dump(obj, f, **kwargs):
        f.write('{"runs": [')  # half a document, then a crash
        raise OSError('disk full')

    monkeypatch.setattr(json, 'dump', broken_dump)
    with pytest.raises(OSError, match='disk full'):
        report.write_report(runs[:1], str(tmp_path))
    assert (tmp_path / 'report.json').read_bytes() == good
    assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]


@pytest.mark.parametrize('bad, match', [
    ([], 'non-empty'),
    ([{'name': 'a'}], 'lacks'),
    ('two same names', 'twice'),
    ('slash', 'name'),
])
def test_bad_runs_are_rejected(runs, tmp_path, bad, match):
    if bad == 'two same names':
        bad = [runs[0], dict(runs[1], name='vogn')]
    elif bad == 'slash':
        bad = [dict(runs[0], name='a/b')]
    with pytest.raises(ValueError, match=match):
        report.write_report(bad, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_markdown_says_which_way_is_better_and_counts_positives(runs,
                                                                tmp_path):
    report.write_report(runs, str(tmp_path))
    table = [line.split(' | ') for line in
             (tmp_path / 'report.md').read_text().splitlines()
             if line.startswith('| ')]
    head = table[0]
    for column, arrow in (('Accuracy (%)', '↑'), ('NLL', '↓'), ('ECE', '↓'),
                          ('AUROC (OOD)', '↑'), ('Brier', '↓'),
                          ('AUROC (misclassification)', '↑')):
        assert column + ' ' + arrow in [c.strip('| ') for c in head], column
    ood = head.index('AUROC (OOD) ↑')
    mis = head.index('AUROC (misclassification) ↑')
    for run, row in zip(runs, table[1:]):
        wrong = int(np.sum(run['probs'].argmax(1) != run['labels']))
        assert row[mis] == '%.3f (n=%d)' % (
            run['metrics']['misclassification_auroc'], wrong)
        if run['ood_probs'] is None:
            assert row[ood] == '-'
        else:
            assert row[ood] == '%.3f (n=%d)' % (run['metrics']['ood_auroc'],
                                                len(run['ood_probs']))


def test_roc_legends_say_what_the_table_says(runs, tmp_path, monkeypatch):
    """Each curve's label: the run, its AUROC and n as in report.md."""
    legends = {}
    save = report._save

    def recording_save(fig, path):
        legend = fig.axes[0].get_legend()
        if legend is not None:
            legends[os.path.basename(path)] = [
                t.get_text() for t in legend.get_texts()]
        return save(fig, path)
    monkeypatch.setattr(report, '_save', recording_save)
    report.write_report(runs, str(tmp_path))
    table = [[c.strip() for c in line.strip('| ').split(' | ')]
             for line in (tmp_path / 'report.md').read_text().splitlines()
             if line.startswith('| ')]
    head, rows = table[0], {row[0]: row for row in table[1:]}
    for figure, column in (('roc_ood.png', 'AUROC (OOD) ↑'),
                           ('roc_misclassification.png',
                            'AUROC (misclassification) ↑')):
        at = head.index(column)
        expected = ['{}: AUROC {}'.format(name, row[at])
                    for name, row in rows.items() if row[at] != '-']
        assert legends[figure] == expected + ['chance']
        assert all('(n=' in label for label in expected)


def test_gallery_shows_the_most_and_least_certain_images(runs, tmp_path):
    rng = np.random.RandomState(3)
    with_ood = runs[:2]
    gallery = {'images': rng.uniform(size=(80, 1, 8, 8)),
               'labels': with_ood[0]['labels'], 'class_names': list('abcde'),
               'ood_images': rng.uniform(size=(50, 1, 8, 8))}
    rows = report._gallery_rows(with_ood, gallery, per_group=2)
    entropy = np.mean([metrics.predictive_entropy(r['probs'])
                       for r in with_ood], axis=0)
    shown = [i for _, _, _, key, i in rows if key == 'probs']
    assert shown[:2] == list(np.argsort(entropy)[:2])
    assert shown[2:] == list(np.argsort(entropy)[::-1][:2])
    assert [key for _, _, _, key, _ in rows] == ['probs'] * 4 + \
        ['ood_probs'] * 4
    written = report.write_report(with_ood, str(tmp_path), gallery=gallery)
    width, height = png_size(written['gallery'])
    assert 300 <= width <= 3000 and 300 <= height <= 3000
