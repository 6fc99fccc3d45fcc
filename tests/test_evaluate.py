"""evaluate.py end to end: tiny runs trained by train.py on digits classes
0-4, evaluated with classes 5-9 as OOD data, on one process and on two."""
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy
import pytest

import chainer_vogn  # NOQA

from chainer_vogn import commands
from chainer_vogn import files
from chainer_vogn import metrics
from chainer_vogn import run_folder

from conftest import bar_draws
from conftest import in_terminal
from conftest import progress_lines


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, 'train.py')
EVALUATE = os.path.join(REPO, 'evaluate.py')
OPTIMIZERS = ('vogn', 'adam', 'mcdropout')
T = 3
OPTIONS = ['--ood', 'holdout:5-9', '--mc-samples', str(T)]
FILES = ('report.json', 'report.csv', 'report.md', 'predictions.npz',
         'roc_ood.png', 'roc_misclassification.png', 'reliability.png',
         'entropy_hist.png', 'gallery.png')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """The --out folders of three tiny runs, trained side by side."""
    root = tmp_path_factory.mktemp('runs')
    jobs = {}
    for optimizer in OPTIMIZERS:
        out = str(root / optimizer)
        jobs[out] = subprocess.Popen(
            [sys.executable, TRAIN, '--optimizer', optimizer, '--dataset',
             'digits', '--classes', '0-4', '--epochs', '2', '--batchsize',
             '64', '--no-progress', '--out', out],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for out, job in jobs.items():
        log = job.communicate(timeout=240)[0]
        assert job.returncode == 0, log
    return list(jobs)


def evaluate(prefix, args, timeout=240):
    """Run evaluate.py after ``prefix`` (an interpreter, or mpiexec's)."""
    return subprocess.run(list(prefix) + [EVALUATE] + args,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def single(runs, tmp_path_factory):
    """evaluate.py on one process: (output folder, completed process)."""
    out = str(tmp_path_factory.mktemp('single') / 'report')
    result = evaluate([sys.executable], runs + OPTIONS + ['--out', out])
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


def png_size(path):
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n' and head[12:16] == b'IHDR', path
    return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24],
                                                              'big')


def test_end_to_end(single):
    out, result = single
    assert sorted(os.listdir(out)) == sorted(FILES + (files.MANIFEST,))
    for name in FILES:
        if name.endswith('.png'):
            width, height = png_size(os.path.join(out, name))
            assert 300 <= width <= 3000 and 300 <= height <= 3000, name

    with open(os.path.join(out, 'report.json')) as f:
        doc = json.load(f)
    assert [r['name'] for r in doc['runs']] == list(OPTIMIZERS)
    assert [r['optimizer'] for r in doc['runs']] == \
        ['VOGN', 'Adam', 'MC dropout']
    assert doc['meta']['T'] == {'vogn': T, 'adam': 1, 'mcdropout': T}
    assert doc['meta']['seed'] == 0 and doc['meta']['processes'] == 1
    assert 'sample_seeds' in doc['conventions']
    predictions = numpy.load(os.path.join(out, 'predictions.npz'))
    for run in doc['runs']:
        m, name = run['metrics'], run['name']
        assert m['mc_samples'] == doc['meta']['T'][name]
        # Digits test set: 180 examples of classes 0-4 and 180 of 5-9.
        assert (m['n_in'], m['n_ood']) == (180, 180)
        for key in ('accuracy', 'nll', 'brier', 'ece', 'ood_auroc',
                    'misclassification_auroc'):
            assert isinstance(m[key], float), (name, key)
        # Mutual information needs T > 1 samples.
        assert (m['ood_auroc_mutual_information'] is None) == \
            (name == 'adam')
        probs = predictions[name + '/probs']
        labels = predictions[name + '/labels']
        assert probs.shape == (180, 5)
        assert predictions[name + '/ood_probs'].shape == (180, 5)
        assert set(labels.tolist()) == set(range(5))
        assert m['accuracy'] == pytest.approx(metrics.accuracy(probs,
                                                               labels))
    # Two epochs of Adam already separate the five digits.
    assert doc['runs'][1]['metrics']['accuracy'] > 0.8

    with open(os.path.join(out, 'report.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [r['name'] for r in rows] == list(OPTIMIZERS)
    assert [int(r['mc_samples']) for r in rows] == [T, 1, T]
    with open(os.path.join(out, 'report.md')) as f:
        table = f.read()
    rows = [line for line in table.splitlines() if line.startswith('| ')]
    assert len(rows) == 4  # header and three runs
    assert table.strip() in result.stdout
    assert os.path.abspath(out) in result.stdout.splitlines()[-1]
    for i, name in enumerate(OPTIMIZERS):
        assert '[{}/3] {}:'.format(i + 1, name) in result.stdout


def test_two_processes_give_the_single_process_result(runs, single, mpiexec,
                                                      tmp_path):
    out = str(tmp_path / 'report')
    result = evaluate(mpiexec(2), runs + OPTIONS + ['--out', out])
    assert result.returncode == 0, result.stdout + result.stderr
    # Only rank 0 prints; without a terminal, plain progress lines.
    assert result.stdout.count('[1/3] vogn') == 1
    shown = progress_lines(result.stdout, 'predicting')
    assert shown.count(100) == 3 and '\r' not in result.stdout, result.stdout
    assert not bar_draws(result.stdout, '      predicting')
    want = numpy.load(os.path.join(single[0], 'predictions.npz'))
    got = numpy.load(os.path.join(out, 'predictions.npz'))
    assert sorted(got.files) == sorted(want.files)
    for key in want.files:
        numpy.testing.assert_allclose(got[key], want[key], rtol=1e-6,
                                      atol=1e-12, err_msg=key)
    docs = []
    for folder in (single[0], out):
        with open(os.path.join(folder, 'report.json')) as f:
            docs.append(json.load(f))
    assert docs[1]['meta']['processes'] == 2
    for a, b in zip(*(doc['runs'] for doc in docs)):
        for key, value in a['metrics'].items():
            if value is None:  # undefined (NaN) on both
                assert b['metrics'][key] is None, key
            else:
                assert b['metrics'][key] == pytest.approx(
                    value, rel=1e-6, abs=1e-9), key


def test_progress_bar_on_a_terminal_comes_from_rank_zero(runs, mpiexec,
                                                        tmp_path):
    status, output = in_terminal(mpiexec(2) + [
        EVALUATE, runs[0], '--mc-samples', '4', '--batchsize', '32',
        '--out', str(tmp_path / 'report')])
    assert status == 0, output
    draws = bar_draws(output, '      predicting')
    # One bar: its share only grows, and it is full once.
    assert len(draws) >= 2 and draws == sorted(draws), output
    assert draws.count(100) == 1, output
    assert not progress_lines(output, 'predicting'), output


def test_no_progress_shows_nothing_on_a_terminal(runs, tmp_path):
    status, output = in_terminal([sys.executable, EVALUATE, runs[0],
                                  '--no-progress', '--out',
                                  str(tmp_path / 'report')])
    assert status == 0, output
    assert 'images/s' not in output and '\r' not in output, output


def without_model(runs, tmp_path):
    folder = str(tmp_path / 'unfinished')
    os.makedirs(folder)
    shutil.copy(os.path.join(runs[1], 'config.json'), folder)
    return [folder]


def _edited(run, tmp_path, name, **changes):
    """A copy ``name`` of ``run`` whose config.json records ``changes``."""
    folder = str(tmp_path / name)
    shutil.copytree(run, folder)
    with open(os.path.join(folder, 'config.json')) as f:
        config = json.load(f)
    config.update(changes)
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        json.dump(config, f)
    return [folder]


def misfit(runs, tmp_path):
    return _edited(runs[1], tmp_path, 'misfit', arch='lenet5')  # an mlp's


def other_optimizer(runs, tmp_path):
    return _edited(runs[0], tmp_path, 'vogn', optimizer='adam')


def other_classes(runs, tmp_path):
    return _edited(runs[1], tmp_path, 'adam', classes='0-3')


@pytest.mark.parametrize('make,message', [
    (without_model, r'run unfinished: \S+unfinished has no model.npz'),
    (misfit, 'run misfit: .*model.npz does not fit the model its config.json '
             'describes'),
    (other_optimizer, r'run vogn: \S+vogn/config.json says optimizer adam '
                      r'but \S+vogn/model.npz says vogn; pass config.json and '
                      r'model.npz of the same run'),
    (other_classes, r'run adam: \S+adam/config.json says classes 0-3 but '
                    r'\S+adam/model.npz says 0-4;'),
])
def test_errors_are_one_clear_line(runs, tmp_path, make, message):
    result = evaluate([sys.executable],
                      make(runs, tmp_path) + ['--out', str(tmp_path / 'r')])
    assert result.returncode == 1
    assert re.fullmatch('evaluate.py: error: ' + message + '.*\n',
                        result.stderr), result.stderr
    assert not os.path.exists(str(tmp_path / 'r'))


def test_model_npz_from_before_it_recorded_the_classes_is_read(runs,
                                                             tmp_path):
    """Such a model.npz is checked on what it records (the optimizer and
    the data set) and read."""
    folder, = _edited(runs[1], tmp_path, 'older')
    path = os.path.join(folder, 'model.npz')
    with numpy.load(path) as f:
        arrays = dict(f)
    meta = json.loads(str(arrays['meta']))
    del meta['classes']
    arrays['meta'] = numpy.array(json.dumps(meta))
    numpy.savez(path, **arrays)
    run = run_folder.Run(folder, 'older')
    assert (run.args.optimizer, run.args.classes) == ('adam', '0-4')
    assert 'classes' not in run.posterior.meta


def test_unwritable_out_is_refused_before_computing(runs, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    result = evaluate([sys.executable], runs[:1] + [
        '--out', str(blocker / 'report')])
    assert result.returncode == 1
    assert re.fullmatch('evaluate.py: error: --out .*file/report: cannot '
                        'write the report there .*\n', result.stderr), \
        result.stderr
    assert '[1/1]' not in result.stdout  # nothing was computed


def test_report_names_the_data_and_replaces_an_earlier_one(runs, single,
                                                            tmp_path):
    """Into the folder of a report with OOD curves goes one without: the
    old curves go, other files stay; runs on other data are flagged."""
    other = str(tmp_path / 'all-digits')
    trained = subprocess.run(
        [sys.executable, TRAIN, '--optimizer', 'adam', '--dataset', 'digits',
         '--epochs', '1', '--no-progress', '--out', other],
        capture_output=True, text=True, timeout=240)
    assert trained.returncode == 0, trained.stderr
    out = shutil.copytree(single[0], str(tmp_path / 'report'))
    with open(os.path.join(out, 'notes.txt'), 'w') as f:
        f.write('mine')
    result = evaluate([sys.executable], [runs[1], other, '--out', out])
    assert result.returncode == 0, result.stderr
    assert 'warning: the runs were tested on different data (adam: digits ' \
        'classes 0-4, all-digits: digits)' in result.stderr
    with open(os.path.join(out, 'report.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [r['data'] for r in rows] == ['digits classes 0-4', 'digits']
    # No OOD curve and no gallery (the runs' test images differ) this time.
    assert sorted(os.listdir(out)) == sorted(
        set(FILES) - {'roc_ood.png', 'gallery.png'} |
        {'notes.txt', files.MANIFEST})


def _hashes(folder):
    return {name: hashlib.sha256(open(os.path.join(folder, name), 'rb')
                                 .read()).hexdigest()
            for name in os.listdir(folder)}


def test_files_of_the_users_in_out_stay_bitwise(runs, tmp_path):
    """The user's gallery.png would be overwritten: refused before any
    sample is computed.  Their roc_ood.png and thesis.tex, which a report
    without --ood does not write, stay through two reports."""
    out = tmp_path / 'report'
    out.mkdir()
    mine = {'gallery.png': b'my gallery', 'roc_ood.png': b'my curve',
            'thesis.tex': b'\\chapter{Results}'}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    before = _hashes(out)
    for _ in range(2):
        result = evaluate([sys.executable], runs[:2] + ['--out', str(out)])
        assert result.returncode == 1
        assert re.fullmatch(r'evaluate.py: error: --out .*report: '
                            r'gallery.png is not written there by '
                            r'chainer_vogn .*\n', result.stderr), \
            result.stderr
        assert '[1/2]' not in result.stdout
        assert _hashes(out) == before
    (out / 'gallery.png').unlink()
    before = _hashes(out)
    for _ in range(2):
        result = evaluate([sys.executable], runs[:2] + ['--out', str(out)])
        assert result.returncode == 0, result.stderr
    after = _hashes(out)
    assert {name: after[name] for name in before} == before


@pytest.mark.parametrize('option,message', [
    (['--mc-samples', '0'], r'T \(--mc-samples\) must be >= 1, got 0'),
    (['--ood', 'holdout:9-5'], 'bad class list'),
    (['--ood', 'imagenet'], 'unknown OOD set'),
])
def test_bad_options_are_refused(capsys, option, message):
    with pytest.raises(SystemExit) as exit:
        commands.evaluate_parser().parse_args(['run'] + option)
    assert exit.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_error_on_every_rank_ends_the_job(runs, tmp_path, mpiexec):
    result = evaluate(mpiexec(2), without_model(runs, tmp_path) +
                      ['--out', str(tmp_path / 'report')], timeout=120)
    assert result.returncode != 0
    assert 'has no model.npz' in result.stderr


#: Runs evaluate.py with predict broken on rank 1 alone, while rank 0 waits
#: for its samples.
ONE_RANK_FAILS = """
import runpy
import sys

import chainer_vogn
from chainer_vogn import predictive
from mpi4py import MPI


def broken(*args, **kwargs):
    raise RuntimeError('injected failure on rank 1')


if MPI.COMM_WORLD.rank == 1:
    predictive.predict = broken
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_exception_on_one_rank_ends_the_job(runs, tmp_path, mpiexec):
    script = tmp_path / 'one_rank_fails.py'
    script.write_text(ONE_RANK_FAILS)
    out = str(tmp_path / 'report')
    result = subprocess.run(
        mpiexec(2) + [str(script), EVALUATE, runs[0], '--out', out],
        capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert 'injected failure on rank 1' in result.stderr
    assert not os.path.exists(out)


def raw_digits(classes):
    """The digits test images of ``classes`` on the [0, 1] scale, as
    scikit-learn gives them, split as datasets.py documents (80/20,
    stratified, random_state 0): evaluate.py's inputs by another path."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    _, x, _, t = train_test_split(digits.images, digits.target,
                                  test_size=0.2, stratify=digits.target,
                                  random_state=0)
    return x[numpy.isin(t, classes)] / 16.0


@pytest.mark.parametrize('name', OPTIMIZERS)
def test_predict_gives_evaluate_probabilities(runs, single, name):
    run = runs[OPTIMIZERS.index(name)]
    saved = numpy.load(os.path.join(single[0], 'predictions.npz'))
    for classes, key in ((range(5), 'probs'), (range(5, 10), 'ood_probs')):
        found = chainer_vogn.predict(run, raw_digits(classes),
                                     num_samples=T, seed=0,
                                     return_samples=True)
        want = saved[name + '/' + key]
        numpy.testing.assert_allclose(found.probs, want, rtol=1e-6,
                                      atol=1e-9)
        t_used = 1 if name == 'adam' else T
        assert found.sample_probs.shape == (t_used,) + want.shape
        assert found.entropy.shape == found.mutual_information.shape == \
            (len(want),)
        numpy.testing.assert_allclose(
            found.entropy, -(want * numpy.log(want)).sum(axis=1), rtol=1e-5,
            atol=1e-9)
        if name == 'adam':  # one pass: nothing left to the weights
            numpy.testing.assert_array_equal(found.mutual_information, 0)
        else:
            assert found.mutual_information.max() > 0


def test_predict_on_a_loaded_posterior_and_model(runs, single):
    from chainer_vogn import datasets
    from chainer_vogn import run_folder
    run = run_folder.Run(runs[0], 'vogn')
    model = run.build_model(run.info)
    x = datasets.prepare_images(raw_digits(range(5))[:, None], run.info)
    found = chainer_vogn.predict((run.posterior, model), x, num_samples=T)
    saved = numpy.load(os.path.join(single[0], 'predictions.npz'))
    numpy.testing.assert_allclose(found.probs, saved['vogn/probs'],
                                  rtol=1e-6, atol=1e-9)


def predict_command(args, env=None):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, 'predict.py')] + args, cwd=REPO,
        env=env, capture_output=True, text=True, timeout=120)


def test_predict_command_prints_top_classes_and_uncertainty(
        runs, tmp_path, no_mpi_env):
    from PIL import Image
    images = raw_digits([3, 7])
    known = images[0]
    unseen = images[-1]
    numpy.save(str(tmp_path / 'known.npy'), known)
    numpy.save(str(tmp_path / 'two.npy'), numpy.stack([known, unseen]))
    Image.fromarray(numpy.uint8(numpy.round(known * 255))).save(
        str(tmp_path / 'known.png'))
    # No MPI needed: it runs after pip install . without the mpi extra.
    result = predict_command(
        [runs[0], str(tmp_path / 'known.npy'), str(tmp_path / 'two.npy'),
         str(tmp_path / 'known.png'), '-T', str(T), '--top', '2'],
        env=no_mpi_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(runs[0] + ': VOGN mlp on digits classes 0-4; '
                               'T = 3 (weights)')
    assert [line.split(': ')[0] for line in lines[1:]] == [
        str(tmp_path / n) for n in ('known.npy', 'two.npy[0]', 'two.npy[1]',
                                    'known.png')]
    found = chainer_vogn.predict(runs[0], numpy.stack([known, unseen]),
                                 num_samples=T)
    for line, row in ((lines[1], 0), (lines[2], 0), (lines[3], 1)):
        probs = found.probs[row]
        best = numpy.argsort(-probs)[:2]
        assert line.split(': ', 1)[1] == (
            '{} {:.1%}, {} {:.1%}; entropy {:.3f} nats, mutual information '
            '{:.3f} nats'.format(best[0], probs[best[0]], best[1],
                                 probs[best[1]], found.entropy[row],
                                 found.mutual_information[row]))


@pytest.mark.parametrize('args,message', [
    (['nowhere', 'x.npy'], 'run nowhere: no folder nowhere'),
    (['RUN', 'missing.npy'], 'missing.npy'),
    (['RUN', 'RUN/config.json'], 'cannot identify image file'),
    (['RUN', 'TMP/empty.npy'], 'TMP/empty.npy: no images'),
    (['RUN', 'TMP/words.npy'], 'TMP/words.npy: could not convert'),
    (['RUN', 'TMP/bytes.npy'], 'TMP/bytes.npy: images span 0..255, outside '
                               'the [0, 1] scale'),
    (['RUN', 'TMP/cut.png'], 'TMP/cut.png: '),
    (['DAMAGED', 'TMP/empty.npy'], 'DAMAGED/model.npz'),
    (['RUN', 'TMP/one.npy', '--device', '99'], '--device 99: no usable GPU'),
    (['RUN', 'TMP/one.npy', '--device', '@cupy:99'],
     '--device @cupy:99: no usable GPU'),
])
def test_predict_command_errors_are_one_line(runs, tmp_path, args, message):
    numpy.save(str(tmp_path / 'empty.npy'), numpy.zeros((0, 8, 8)))
    numpy.save(str(tmp_path / 'one.npy'), numpy.zeros((8, 8)))
    numpy.save(str(tmp_path / 'words.npy'), numpy.array(['a', 'b']))
    numpy.save(str(tmp_path / 'bytes.npy'),
               numpy.arange(64).reshape(8, 8) * 255 // 63)
    from PIL import Image
    Image.fromarray(numpy.zeros((8, 8), numpy.uint8)).save(
        str(tmp_path / 'cut.png'))
    with open(str(tmp_path / 'cut.png'), 'r+b') as f:
        f.truncate(40)
    damaged = shutil.copytree(runs[0], str(tmp_path / 'damaged'))
    with open(os.path.join(damaged, 'model.npz'), 'r+b') as f:
        f.truncate(200)
    args = [a.replace('RUN', runs[0]).replace('TMP', str(tmp_path))
            .replace('DAMAGED', damaged) for a in args]
    message = message.replace('TMP', str(tmp_path)).replace('DAMAGED',
                                                            damaged)
    result = predict_command(args)
    assert result.returncode == 1
    assert result.stderr.count('\n') == 1, result.stderr
    assert result.stderr.startswith('predict.py: error:')
    assert message in result.stderr


def test_predict_command_takes_train_pys_device(runs, tmp_path):
    numpy.save(str(tmp_path / 'one.npy'), numpy.zeros((8, 8)))
    result = predict_command([runs[1], str(tmp_path / 'one.npy'),
                              '--device', '-1'])
    assert result.returncode == 0, result.stderr
    result = predict_command([runs[1], str(tmp_path / 'one.npy'),
                              '--device', 'gpu'])
    assert result.returncode == 2
    assert "--device: 'gpu' is invalid" in result.stderr


@pytest.mark.parametrize('device', [99, '@cupy:99'])
def test_predict_function_raises_on_a_device_it_cannot_use(runs, device):
    """The library raises, naming the device; it never exits."""
    from chainer_vogn import errors
    with pytest.raises(errors.RunError, match='no usable GPU'):
        chainer_vogn.predict(runs[1], numpy.zeros((8, 8)), device=device)


def test_console_prints_a_dash_for_what_is_undefined(runs, tmp_path):
    result = evaluate([sys.executable], [runs[1], '--out',
                                         str(tmp_path / 'r')])
    assert result.returncode == 0, result.stderr
    line, = [l for l in result.stdout.splitlines() if 'OOD AUROC' in l]
    assert line.strip().startswith('accuracy ')
    assert 'OOD AUROC - (' in line and 'nan' not in result.stdout.lower()
