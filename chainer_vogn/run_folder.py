"""A trained run's predictions on new images: ``chainer_vogn.predict``.

    import chainer_vogn
    out = chainer_vogn.predict('runs/vogn', images, num_samples=20)
    out.probs, out.entropy, out.mutual_information

``images`` are raw images on the [0, 1] scale in the data set's own layout,
and are prepared exactly as in training (standardised with the training
set's mean and std, enlarged as the run's model takes them).  The samples are
drawn as :mod:`chainer_vogn.predictive` draws them for evaluate.py, so the
same run, seed and T give the same probabilities there and here.
"""
import collections
import json
import os
import zipfile

import numpy

from chainer_vogn import datasets
from chainer_vogn import metrics
from chainer_vogn import posterior as posterior_module
from chainer_vogn import predictive
from chainer_vogn import registry
from chainer_vogn import run_options
from chainer_vogn import run_setup
from chainer_vogn.errors import RunError

Uncertainty = collections.namedtuple(
    'Uncertainty', ['probs', 'entropy', 'mutual_information',
                    'sample_probs'])
Uncertainty.__doc__ = """What :func:`predict` returns, as NumPy float64 arrays.

``probs`` (N, C): the predictive distribution; ``entropy`` (N,): its entropy
in nats (total uncertainty); ``mutual_information`` (N,): the part of it due
to the weights (BALD, 0 for point runs); ``sample_probs`` (T, N, C): the T
samples' probabilities, or None unless asked for.
"""


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _read(name, path, read):
    """``read(path)``; RunError naming run ``name`` and the file if it
    cannot be read."""
    try:
        return read(path)
    except (ValueError, OSError, EOFError, KeyError,
            zipfile.BadZipFile) as e:
        raise RunError('run {}: cannot read {}: {}'.format(name, path, e))


def _shown(value):
    """A recorded option in a message: None (no --classes) as 'all'."""
    return 'all' if value is None else value


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
        self.config = _read(name, files['config.json'], _read_json)
        self.posterior = _read(name, files['model.npz'],
                               posterior_module.load_posterior)
        try:
            self.args = run_options.RunConfig.from_record(self.config)
        except ValueError as e:
            raise RunError('run {}: {}/config.json: {}'.format(name, path, e))
        self._check_records_agree(files)
        if data_dir is not None:
            self.args.data_dir = data_dir
        self.spec = registry.optimizer_spec(self.args.optimizer)
        self.method = self.spec.sampling

    #: What config.json and model.npz both record of a run (model.npz since
    #: 'classes' was added: an older one lacks it and is not checked on it).
    RECORDED_IN_BOTH = ('optimizer', 'dataset', 'classes')

    def _check_records_agree(self, files):
        """RunError naming both files and values when config.json and
        model.npz are of different runs (one of them copied or edited)."""
        for key in self.RECORDED_IN_BOTH:
            if key not in self.posterior.meta:
                continue
            recorded, saved = getattr(self.args, key), self.posterior.meta[key]
            if recorded != saved:
                raise RunError(
                    'run {}: {} says {} {} but {} says {}; pass config.json '
                    'and model.npz of the same run'.format(
                        self.name, files['config.json'], key,
                        _shown(recorded), files['model.npz'], _shown(saved)))

    @property
    def info(self):
        """The data set as the run saw it (config.json ``dataset_info``)."""
        return self.config['dataset_info']

    @property
    def classes(self):
        """The data set's class of each output of the model."""
        return self.info.get('classes') or list(range(self.info['n_classes']))

    @property
    def data(self):
        """The data set and classes the run was trained and is tested on."""
        return run_setup.describe_data(self.args)

    def describe(self):
        return '{} {} on {}'.format(self.spec.label, self.args.arch,
                                    self.data)

    def build_model(self, info):
        """The run's L.Classifier holding its mean weights."""
        model = run_setup.build_model(self.args, info)
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


def as_batch(images, info):
    """Raw images (one, or a batch; (H, W) or (C, H, W) each) as a batch
    (N, C, H, W) in the layout of ``info``'s data set."""
    x = numpy.asarray(images, numpy.float32)
    if x.size == 0:
        raise ValueError('no images: an empty array of shape {}'.format(
            x.shape))
    if not numpy.isfinite(x).all():
        raise ValueError('images hold NaN or infinite values')
    if x.min() < 0 or x.max() > 1:
        raise ValueError(
            'images span {:.4g}..{:.4g}, outside the [0, 1] scale the run '
            'takes; divide them by their scale\'s maximum (255 for 8-bit, 16 '
            'for the digits\' 0..16) first'.format(x.min(), x.max()))
    channels, side = datasets.image_shape(info['name'])
    one = (channels, side, side)
    for shape in (one, one[1:]) if channels == 1 else (one,):
        if x.shape[-len(shape):] == shape and x.ndim in (len(shape),
                                                          len(shape) + 1):
            return x.reshape((-1,) + one)
    raise ValueError(
        'images of shape {} do not fit {}, whose images are {}x{}x{} '
        '(channels x height x width): pass one image (H, W) or (C, H, W) or '
        'a batch of them'.format(x.shape, info['name'], channels, side, side))


def _loaded(run, images):
    """(model, posterior, method, prepared inputs) of ``run``."""
    if isinstance(run, (tuple, list)):
        post, model = run
        optimizer = post.meta.get('optimizer')
        if optimizer is None:
            method = 'point' if post.is_point_estimate else 'weights'
        else:
            method = registry.optimizer_spec(optimizer).sampling
        return model, post, method, numpy.asarray(images, numpy.float32)
    if not isinstance(run, Run):
        run = Run(run, os.path.basename(os.path.normpath(run)))
    x = datasets.prepare_images(as_batch(images, run.info), run.info)
    return run.build_model(run.info), run.posterior, run.method, x


def predict(run, images, num_samples=10, seed=0, device=None, batchsize=256,
            return_samples=False):
    """Predictive probabilities and uncertainty of a trained run on images.

    Args:
        run: a train.py ``--out`` folder (or a :class:`Run` of one), or a
            ``(posterior, model)`` pair: a loaded
            :class:`~chainer_vogn.posterior.Posterior` and the link it was
            saved from; then ``images`` must already be the model's inputs
            (N, C, H, W), standardised and sized as in training.
        images: raw images on the [0, 1] scale in the data set's own
            layout: one image or a batch, (H, W) or (C, H, W) per image.
        num_samples (int): T, the Monte Carlo samples (VOGN: weight samples,
            MC dropout: dropout passes); point runs always make one pass.
        seed (int): with t, the seed of sample t (as evaluate.py's --seed).
        device: the CPU when None or -1, GPU n for an int n >= 0, or a
            Chainer device specifier such as ``'@cupy:0'``; RunError when
            it cannot be used.
        batchsize (int): images per forward pass.
        return_samples (bool): also return the T samples' probabilities.

    Returns:
        :class:`Uncertainty` of NumPy arrays, one row per image.
    """
    device = run_setup.select_device(-1 if device is None else device)
    model, post, method, x = _loaded(run, images)
    n_samples = predictive.samples_used(method, num_samples)
    found, = predictive.predict(model, post, method, [x], n_samples, seed,
                                device, batchsize)
    return Uncertainty(found.probs, metrics.predictive_entropy(found.probs),
                       metrics.mutual_information(found.sample_probs),
                       found.sample_probs if return_samples else None)
