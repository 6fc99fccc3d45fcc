"""chainer_vogn.IVON against the reference package ivon-opt on one stream.

A one-off check, not part of ``make test``: ivon-opt needs PyTorch, which
this project does not depend on, so the reference runs in another
interpreter (a virtual environment with ``torch`` and ``ivon-opt``).  Both
sides train the same float64 two-layer network from the same initial
weights on the same minibatches, with the same eps: the reference draws its
noise with ``torch.randn``, which is replaced here by the shared eps; the
Chainer optimizer's ``_draw_eps`` returns the same values.  Everything else
is each package's own code.  The script prints the largest difference of
the mean, the momentum and the Hessian estimate over all steps.

    python bench/ivon_reference.py --torch-python /path/to/venv/bin/python
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy

IN, HIDDEN, CLASSES, EXAMPLES, BATCH = 10, 16, 3, 256, 32
#: Names of the network's parameters, in PyTorch's order.
NAMES = ('/l1/W', '/l1/b', '/l2/W', '/l2/b')
#: The settings compared: the reference's defaults (it has none for lr),
#: and one where beta2 is small enough for the correction term to matter,
#: clipping bites and lr is neither rescaled nor the momentum debiased.
SETTINGS = {
    'defaults': dict(lr=0.1),
    'moving_h': dict(lr=0.05, beta1=0.8, beta2=0.99, hess_init=0.3,
                     weight_decay=1e-2, clip_radius=0.5, rescale_lr=False,
                     debias=False),
}
#: This project's names for the reference's arguments.
RENAMED = {'mc_samples': 'num_samples', 'ess': 'dataset_size'}


def make_problem(folder, steps, samples, seed=0):
    """Data, minibatch order, initial weights and eps, saved for both sides."""
    rng = numpy.random.RandomState(seed)
    x = rng.randn(EXAMPLES, IN)
    t = (x[:, :CLASSES] + 0.5 * rng.randn(EXAMPLES, CLASSES)).argmax(1)
    shapes = {'/l1/W': (HIDDEN, IN), '/l1/b': (HIDDEN,),
              '/l2/W': (CLASSES, HIDDEN), '/l2/b': (CLASSES,)}
    init = {name: rng.randn(*shapes[name]) * 0.3 for name in NAMES}
    numel = sum(v.size for v in init.values())
    numpy.savez(os.path.join(folder, 'problem.npz'), x=x, t=t,
                batches=numpy.stack([rng.choice(EXAMPLES, BATCH, False)
                                     for _ in range(steps)]),
                eps=rng.randn(steps, samples, numel),
                **{'init' + name: value for name, value in init.items()})


def _load(folder):
    with numpy.load(os.path.join(folder, 'problem.npz')) as f:
        return {key: f[key] for key in f.files}


def run_reference(folder, setting, samples):
    """The reference package's IVON (run under --torch-python)."""
    import importlib.metadata
    from unittest import mock

    import torch
    import ivon
    p = _load(folder)
    torch.set_default_dtype(torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(),
                                torch.nn.Linear(HIDDEN, CLASSES))
    with torch.no_grad():
        for param, name in zip(model.parameters(), NAMES):
            param.copy_(torch.from_numpy(p['init' + name]))
    opt = ivon.IVON(model.parameters(), ess=EXAMPLES, mc_samples=samples,
                    **SETTINGS[setting])
    eps = iter(torch.from_numpy(p['eps']).reshape(-1, p['eps'].shape[-1]))
    x, t = torch.from_numpy(p['x']), torch.from_numpy(p['t'])
    means, moments, hessians = [], [], []
    with mock.patch('torch.randn', lambda *args, **kwargs: next(eps)):
        for rows in p['batches']:
            rows = torch.from_numpy(rows)
            for _ in range(samples):
                with opt.sampled_params(train=True):
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(
                        model(x[rows]), t[rows]).backward()
            opt.step()
            group = opt.param_groups[0]
            means.append(torch.cat([q.detach().flatten()
                                    for q in model.parameters()]).numpy())
            moments.append(group['momentum'].numpy().copy())
            hessians.append(group['hess'].numpy().copy())
    numpy.savez(os.path.join(folder, 'reference_{}.npz'.format(setting)),
                mean=means, momentum=moments, hess=hessians,
                version=importlib.metadata.version('ivon-opt'))


def run_chainer(folder, setting, samples):
    """chainer_vogn.IVON on the same problem; the same arrays as the
    reference's, each step's parameters flattened in PyTorch's order."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    import chainer_vogn
    import chainer
    import chainer.functions as F
    import chainer.links as L
    p = _load(folder)
    model = chainer.Sequential(L.Linear(IN, HIDDEN), F.tanh,
                               L.Linear(HIDDEN, CLASSES))
    links = {'/l1': model[0], '/l2': model[2]}
    params = {name: getattr(links[name[:3]], name[4:]) for name in NAMES}
    for name, param in params.items():
        param.array = p['init' + name].copy()
    kwargs = {RENAMED.get(k, k): v for k, v in SETTINGS[setting].items()}
    opt = chainer_vogn.IVON(EXAMPLES, num_samples=samples,
                            **kwargs).setup(model)
    offsets = numpy.cumsum([0] + [params[name].size for name in NAMES])
    name_of = {id(param): name for name, param in params.items()}

    def shared_eps(named, step, k):
        flat = p['eps'][step - 1, k]
        by_name = {name: flat[offsets[i]:offsets[i + 1]].reshape(
            params[name].shape) for i, name in enumerate(NAMES)}
        return {name: by_name[name_of[id(param)]] for name, param in named}
    opt._draw_eps = shared_eps

    def flat(values):
        return numpy.concatenate([values(params[n]).ravel() for n in NAMES])
    means, moments, hessians = [], [], []
    for rows in p['batches']:
        opt.update(lambda a, b: F.softmax_cross_entropy(model(a), b),
                   p['x'][rows], p['t'][rows].astype(numpy.int32))
        means.append(flat(lambda q: q.array))
        moments.append(flat(lambda q: q.update_rule.state['m']))
        hessians.append(flat(lambda q: q.update_rule.state['h']))
    return dict(mean=numpy.array(means), momentum=numpy.array(moments),
                hess=numpy.array(hessians))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--torch-python', required=True,
                        help='an interpreter with torch and ivon-opt')
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--samples', type=int, default=2,
                        help='MC samples per step')
    parser.add_argument('--out', help='write the result as JSON here')
    parser.add_argument('--reference-side', metavar='FOLDER',
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_side:
        for setting in SETTINGS:
            run_reference(args.reference_side, setting, args.samples)
        return
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        make_problem(folder, args.steps, args.samples)
        subprocess.run([args.torch_python, os.path.abspath(__file__),
                        '--torch-python', args.torch_python,
                        '--samples', str(args.samples),
                        '--reference-side', folder], check=True)
        for setting in SETTINGS:
            mine = run_chainer(folder, setting, args.samples)
            with numpy.load(os.path.join(
                    folder, 'reference_{}.npz'.format(setting))) as ref:
                version = str(ref['version'])
                results[setting] = {
                    key: {'max_abs': float(numpy.abs(mine[key] - ref[key])
                                           .max()),
                          'max_rel': float((numpy.abs(mine[key] - ref[key])
                                            / numpy.abs(ref[key]).clip(
                                                1e-12)).max()),
                          'moved': float(numpy.abs(ref[key][-1] - ref[key][0])
                                         .max())}
                    for key in ('mean', 'momentum', 'hess')}
    print('ivon-opt {}, {} steps, {} samples per step, float64'.format(
        version, args.steps, args.samples))
    print('| setting | state | max abs diff | max rel diff | moved |')
    print('|---|---|---|---|---|')
    for setting, found in results.items():
        for key, r in found.items():
            print('| {} | {} | {:.2e} | {:.2e} | {:.3g} |'.format(
                setting, key, r['max_abs'], r['max_rel'], r['moved']))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({'ivon_opt': version, 'steps': args.steps,
                       'samples': args.samples, 'settings': SETTINGS,
                       'results': results}, f, indent=1)


if __name__ == '__main__':
    main()
