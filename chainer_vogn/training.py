"""Wires datasets, models, optimizers and ChainerMN into a Chainer Trainer.

``run(args)`` is all of train.py.  Every rank builds the same model and
optimizer; rank 0's initial weights are broadcast once; each rank trains on
the shard of its data communicator; rank 0 alone prints, plots and writes
``model.npz`` and ``config.json``.  Every rank writes its own snapshot
(``snapshot_rank<r>_epoch<e>.npz``: weights, optimizer state, iterator
position and random states), so ``--resume`` continues exactly.
"""
import math
import os
import re
import sys

import numpy

import chainer
from chainer import training
from chainer.training import extensions
from chainer.training import triggers
import chainermn

from chainer_vogn import checkpoint
from chainer_vogn import compat
from chainer_vogn import datasets
from chainer_vogn import distributed
from chainer_vogn import files
from chainer_vogn import posterior
from chainer_vogn import progress
from chainer_vogn import registry
from chainer_vogn import run_setup
from chainer_vogn import validation
from chainer_vogn.errors import RunError
from chainer_vogn.posterior_optimizer import PosteriorOptimizer


class Updater(training.updaters.StandardUpdater):
    """StandardUpdater whose snapshots also carry random number generators.

    ``random_states`` maps names to objects with ``get_state``/``set_state``
    (numpy RandomStates, or the ``numpy.random`` module for the global one
    that dropout draws from).
    """

    def __init__(self, iterator, optimizer, device, random_states):
        super(Updater, self).__init__(iterator, optimizer, device=device)
        self.random_states = random_states

    def serialize(self, serializer):
        super(Updater, self).serialize(serializer)
        for name, rng in sorted(self.random_states.items()):
            kind, keys, pos, has_gauss, cached = rng.get_state()
            s = serializer['random_' + name]
            keys = s('keys', keys.copy())
            rest = s('rest', numpy.array([pos, has_gauss, cached], 'd'))
            rng.set_state((kind, numpy.asarray(keys, numpy.uint32),
                           int(rest[0]), int(rest[1]), float(rest[2])))


class StopOnDivergence(training.Extension):
    """Stop the run, on every rank alike, when it diverges: when the
    training loss of a step (the mean over the ranks) is not finite, or is
    over :attr:`GROWTH` times that of the run's first step; and when a
    parameter is not finite at the end of an epoch (a step's loss comes
    before its update, so the epoch's last update is checked so).

    A classifier starts near log(classes) (2.3 nats for ten); a hundred
    times that puts the true class at a probability below e^-230, which no
    run that learns comes near.  It runs before the snapshot, so every
    snapshot on disk was written before the run diverged.
    """

    trigger = 1, 'iteration'
    priority = training.PRIORITY_WRITER + 1
    GROWTH = 100

    def __init__(self, comm, lr_attr):
        self.comm = comm
        self.lr_attr = lr_attr
        self.first_loss = math.nan

    def __call__(self, trainer):
        loss = trainer.observation['main/loss']
        losses = self.comm.mpi_comm.allgather(float(getattr(loss, 'array',
                                                            loss)))
        loss = sum(losses) / len(losses)
        if math.isnan(self.first_loss):
            self.first_loss = loss
        if not (math.isfinite(loss) and loss <= self.GROWTH * self.first_loss):
            self._stop(trainer, 'the training loss is {:.4g}{}'.format(
                loss, ', over {} times the first step\'s {:.4g}'.format(
                    self.GROWTH, self.first_loss)
                if math.isfinite(loss) else ''))
        if trainer.updater.is_new_epoch:
            self._check_parameters(trainer)

    def _check_parameters(self, trainer):
        """Stop if a parameter is not finite after the step, on any rank."""
        model = trainer.updater.get_optimizer('main').target
        bad = [name for name, param in sorted(model.namedparams())
               if not bool(chainer.backend.get_array_module(param.array)
                           .isfinite(param.array).all())]
        bad = sorted(set(sum(self.comm.mpi_comm.allgather(bad), [])))
        if bad:
            self._stop(trainer, 'parameter {} is not finite'.format(bad[0]))

    def _stop(self, trainer, what):
        lr = getattr(trainer.updater.get_optimizer('main'), self.lr_attr)
        raise FloatingPointError(
            'training diverged at iteration {} (epoch {}): {}; --lr (now '
            '{:.4g}) is most likely too large'.format(
                trainer.updater.iteration,
                math.ceil(trainer.updater.epoch_detail), what, lr))

    def serialize(self, serializer):
        try:
            self.first_loss = float(serializer('first_loss',
                                               self.first_loss))
        except KeyError:  # a snapshot written before it kept the first loss
            pass


class ShowProgress(training.Extension):
    """The run's :class:`~chainer_vogn.progress.Progress` in iterations,
    updated every iteration, with the time left and the training images a
    second over all data shards."""

    trigger = 1, 'iteration'
    priority = training.PRIORITY_READER  # after PrintReport's epoch row

    def __init__(self, style, epochs, iterations_per_epoch, images_per_step):
        self.epochs = epochs
        self.progress = progress.Progress(
            math.ceil(epochs * iterations_per_epoch), style,
            'training', 'images', images_per_step)

    def initialize(self, trainer):
        self.progress.start(trainer.updater.iteration)

    def __call__(self, trainer):
        updater = trainer.updater
        self.progress.update(updater.iteration, 'epoch {:.1f}/{}'.format(
            updater.epoch_detail, self.epochs))

    def finalize(self):
        self.progress.close()


def _newest_snapshot(folder, comm):
    """Which snapshot a diverged run has to go back to, in words."""
    found = checkpoint.find_snapshots(folder)
    common = set.intersection(*(set(found.get(rank, []))
                                for rank in range(comm.size)))
    if not common:
        return 'No snapshot was written before it, so rerun with a ' \
            'smaller --lr, in this --out or another'
    return 'The newest good snapshot is {} (epoch {}; another --lr needs ' \
        'another --out)'.format(checkpoint.snapshot_path(
            folder, 'R' if comm.size > 1 else 0, max(common)), max(common))


def weighted_by_examples(model):
    """``model`` as an Evaluator's eval_func whose reports count per example.

    Chainer's Evaluator averages batch means with equal weights, so with 360
    test images in batches of 256 the last 104 count as much as the first
    256; weighting each report by its batch size gives the mean over test
    examples, the number evaluate.py reports.
    """
    def eval_func(x, t):
        model(x, t)
        observation = chainer.reporter.get_current_reporter().observation
        for key, value in observation.items():
            observation[key] = (value, len(t))
    return eval_func


def validation_epochs(interval, epochs):
    """The epochs after which the held-out set is evaluated: every
    ``interval``-th and the last."""
    return sorted(set(range(interval, epochs + 1, interval)) | {epochs})


def validation_trigger(args):
    """A trigger of its own for each extension (a trigger keeps state) that
    fires after the epochs of :func:`validation_epochs`."""
    return triggers.ManualScheduleTrigger(
        validation_epochs(args.val_interval, args.epochs), 'epoch')


def config_record(args, comm, optimizer, info):
    record = dict(vars(args))
    record.update(
        processes=comm.size, sample_groups=args.samples,
        data_shards=comm.size // args.samples, dataset_info=info,
        versions=compat.versions(), command=' '.join(sys.argv))
    if isinstance(optimizer, PosteriorOptimizer):
        record['dataset_size'] = optimizer.dataset_size
        # As used: derived from the data and the model when not given.
        for name, value in optimizer.derived().items():
            record[name + '_used'] = value
    return record


def describe_derived(args, optimizer):
    """train.py's line of the hyperparameters ``optimizer`` derived, or
    None when every one was given."""
    if not isinstance(optimizer, PosteriorOptimizer):
        return None
    derived = optimizer.derived()
    if all(getattr(args, name, None) is not None for name in derived):
        return None
    return '{}: {} (derived where not given: {})'.format(
        optimizer.label, ', '.join(
            '{} = {:.4g}'.format(name.replace('_', ' '), value)
            for name, value in derived.items()), optimizer.derived_help)


def run(args):
    """Train as train.py does; returns the trainer (for tests), or None
    when the run in ``args.out`` had finished already."""
    distributed.abort_on_uncaught_exception()
    comm = distributed.create_communicator(args.communicator, args.device)
    layout = distributed.Layout(comm.size, comm.rank, args.samples)
    plan = checkpoint.plan(args, comm)
    try:
        return None if plan.finished else _train(args, comm, layout, plan)
    finally:
        plan.release()


def _train(args, comm, layout, plan):
    """The training of :func:`run`, as ``plan`` says it starts."""
    device = run_setup.select_device(args.device, comm.mpi_comm)
    spec = registry.OPTIMIZERS[args.optimizer]

    train, test, info = run_setup.load_data(args,
                                              download_hint='--allow-download')
    train, held_out = run_setup.split_validation(train, args)
    held_out_name = 'test' if held_out is None else 'validation'
    if held_out is None:
        held_out = test
    numpy.random.seed(args.seed)
    model = run_setup.build_model(args, info)
    model.to_device(device)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        model.predictor(device.send(train[0][0][None]))  # lazy shapes
    optimizer = spec.build(args, comm, model, len(train))
    learns_posterior = isinstance(optimizer, PosteriorOptimizer)
    data_comm = optimizer.data_comm if learns_posterior else comm

    # Shards: rank data_id of every sample group gets the same one, and
    # the same order and augmentation, so a sample communicator sees the
    # same minibatches.
    shard = chainermn.scatter_dataset(train, data_comm, shuffle=True,
                                      seed=args.seed)
    if args.batchsize > len(shard):
        # The iterator would fill the minibatch with repeated images, and
        # one step would pass --epochs.
        where = 'the training set' if data_comm.size == 1 else \
            'each process\'s shard of the training set'
        raise RunError('--batchsize {}: larger than {} ({} images); use at '
                       'most {}'.format(args.batchsize, where, len(shard),
                                        len(shard)))
    order_rng = numpy.random.RandomState([args.seed, layout.data_id, 1])
    random_states = {'order': order_rng, 'global': numpy.random}
    if args.augment:
        crop_flip = datasets.RandomCropFlip(seed=[args.seed, layout.data_id, 2])
        shard = chainer.datasets.TransformDataset(shard, crop_flip)
        random_states['augment'] = crop_flip.random_state
    train_iter = chainer.iterators.SerialIterator(
        shard, args.batchsize,
        order_sampler=chainer.iterators.ShuffleOrderSampler(order_rng))
    test_iter = chainer.iterators.SerialIterator(
        chainermn.scatter_dataset(held_out, comm), args.eval_batchsize,
        repeat=False, shuffle=False)

    updater = Updater(train_iter, optimizer, device, random_states)
    trainer = training.Trainer(updater, (args.epochs, 'epoch'), out=args.out)
    evaluator = extensions.Evaluator(test_iter, model, device=device,
                                     eval_func=weighted_by_examples(model))
    trainer.extend(chainermn.create_multi_node_evaluator(evaluator, comm),
                   trigger=validation_trigger(args))
    predictive = bool(args.val_samples) and spec.sampling != 'point'
    if predictive:
        trainer.extend(validation.PredictiveValidation(
            chainermn.scatter_dataset(held_out, comm,
                                      force_equal_length=False),
            model, optimizer, spec.sampling, args.val_samples, comm, device,
            seed=args.seed, batchsize=args.eval_batchsize),
            trigger=validation_trigger(args))
    divergence = StopOnDivergence(comm, spec.lr_attr)
    trainer.extend(divergence)
    if args.lr_milestones:
        trainer.extend(extensions.ExponentialShift(spec.lr_attr,
                                                   args.lr_decay),
                       trigger=triggers.ManualScheduleTrigger(
                           args.lr_milestones, 'epoch'))
    trainer.extend(checkpoint.Snapshot(comm, args.out,
                                       plan.identity(args, comm)),
                   trigger=(args.snapshot_interval, 'epoch'))
    if comm.rank == 0:
        _add_reports(trainer, args, predictive, held_out_name,
                     learns_posterior)
    style = progress.choose(args.progress, comm.rank)
    if style:
        trainer.extend(ShowProgress(
            style, args.epochs, len(shard) / args.batchsize,
            args.batchsize * layout.num_data_shards))

    os.makedirs(args.out, exist_ok=True)
    record = config_record(args, comm, optimizer, info)
    record['held_out'] = {'name': held_out_name, 'size': len(held_out),
                          'train_size': len(train)}
    record['run_id'] = plan.run_id
    if comm.rank == 0:
        print('The log\'s validation/* numbers are on the {} set ({} images; '
              'training on {}){}'.format(
                  held_out_name, len(held_out), len(train),
                  '; --val-split F holds training images out instead'
                  if held_out_name == 'test' else ''))
    derived = describe_derived(args, optimizer)
    if comm.rank == 0 and derived:
        print(derived)
    plan.start(trainer, comm, record)
    try:
        trainer.run(show_loop_exception_msg=False)
    except FloatingPointError as e:
        raise RunError('{}. {}'.format(str(e).rstrip('.'),
                                        _newest_snapshot(args.out, comm)))

    if comm.rank == 0:
        meta = {'arch': args.arch, 'optimizer': args.optimizer,
                'dataset': args.dataset, 'classes': args.classes,
                'dropout': args.dropout,
                'n_classes': info['n_classes'],
                'in_channels': info['in_channels'],
                'image_size': info['image_size']}
        posterior.save_posterior(
            os.path.join(args.out, 'model.npz'), model,
            optimizer if learns_posterior else None, meta=meta)
        record['finished'] = True
        record['final'] = trainer.get_extension('LogReport').log[-1]
        files.write_json(os.path.join(args.out, 'config.json'), record)
    return trainer


def _series_names(held_out_name, learns_posterior):
    """Readable names of the logged series in loss.png and accuracy.png;
    ``held_out_name`` is the set the validation/* series are on, scored
    with the posterior's mean weights or, for a point estimate (Adam, SGD,
    MC dropout), with the weights themselves."""
    weights = '(mean weights)' if learns_posterior else '(the weights)'
    return {'main/loss': 'training loss',
            'validation/main/loss': held_out_name + ' loss ' + weights,
            'main/accuracy': 'training accuracy',
            'validation/main/accuracy':
                held_out_name + ' accuracy ' + weights,
            validation.NLL: held_out_name + ' NLL (predictive)',
            validation.ACCURACY: held_out_name + ' accuracy (predictive)'}


class PlainConsole(object):
    """``stream`` without terminal escape codes unless it ends on a
    terminal (:func:`chainer_vogn.progress.is_terminal`, which looks through
    an MPI launcher).

    Chainer's PrintReport clears the line with an escape code before each
    row, which shows up as garbage in log files and captured output; on a
    terminal it erases the progress bar.
    """

    _ESCAPE = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')

    def __init__(self, stream):
        self.stream = stream
        self.is_terminal = progress.is_terminal(stream)

    def write(self, text):
        if not self.is_terminal:
            text = self._ESCAPE.sub('', text)
        self.stream.write(text)

    def flush(self):
        self.stream.flush()


class LogReport(extensions.LogReport):
    """Chainer's LogReport, once an epoch, writing ``log`` with
    :func:`~chainer_vogn.files.write_json`: Chainer's own writes through a
    temporary folder ``log<random>`` that a kill leaves behind and whose
    name does not tell it from a folder of the user's."""

    def __init__(self, folder):
        super(LogReport, self).__init__(trigger=(1, 'epoch'), log_name=None)
        self.path = os.path.join(folder, 'log')

    def __call__(self, trainer):
        entries = len(self.log)
        super(LogReport, self).__call__(trainer)
        if len(self.log) > entries:
            files.write_json(self.path, self.log)


def _plot_title(args):
    """Which run a plot is of, since loss.png files look alike: 'vogn:
    vogn (mlp) on digits classes 0-4'."""
    return '{}: {} ({}) on {}'.format(
        os.path.basename(os.path.normpath(args.out)), args.optimizer,
        args.arch, run_setup.describe_data(args))


def _label_plot(ylabel, log_scale, series_names, title):
    """PlotReport postprocess: title, axis labels, series names, scale; and the
    figure saved through :func:`~chainer_vogn.files.atomic_write`, as
    PlotReport saves it straight into the file (a full disk left an empty
    PNG)."""
    def postprocess(figure, axes, summary):
        axes.set_title(title, fontsize='medium')
        axes.set_xlabel('epoch')
        axes.set_ylabel(ylabel)
        if log_scale:
            axes.set_yscale('log')
        for line in axes.get_lines():
            line.set_label(series_names.get(line.get_label(),
                                             line.get_label()))
        save = figure.savefig
        figure.savefig = lambda path, **kwargs: files.atomic_write(
            path, lambda f: save(f, format='png', **kwargs), binary=True)
    return postprocess


def _add_reports(trainer, args, predictive, held_out_name,
                 learns_posterior):
    """Log, console table and plots; ``predictive``: the run
    reports PredictiveValidation's numbers too; ``held_out_name``: the set
    they are on ('test' or 'validation'); ``learns_posterior``: the run
    learns a posterior, scored with its mean weights."""
    series_names = _series_names(held_out_name, learns_posterior)
    title = _plot_title(args)
    console = PlainConsole(sys.stdout)
    trainer.extend(LogReport(args.out))
    accuracy_keys, nll_keys = [], []
    if predictive:
        accuracy_keys, nll_keys = [validation.ACCURACY], [validation.NLL]
    trainer.extend(extensions.PrintReport(
        ['epoch', 'iteration', 'main/loss', 'main/accuracy',
         'validation/main/loss', 'validation/main/accuracy'] +
        accuracy_keys + nll_keys + ['elapsed_time'], out=console))
    if extensions.PlotReport.available():
        trainer.extend(extensions.PlotReport(
            ['main/loss', 'validation/main/loss'] + nll_keys, 'epoch',
            file_name='loss.png',
            postprocess=_label_plot('loss (nats, log scale)', True,
                                    series_names, title)))
        trainer.extend(extensions.PlotReport(
            ['main/accuracy', 'validation/main/accuracy'] + accuracy_keys,
            'epoch',
            file_name='accuracy.png',
            postprocess=_label_plot('accuracy', False, series_names,
                                    title)))
