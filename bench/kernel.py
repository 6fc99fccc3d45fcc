"""Achieved bandwidth of VOGN's fused CuPy update kernel against a copy.

The update kernel reads g_hat, h_hat, mu, m, s and writes mu, m, s (8 array
passes).  A plain copy (``cupy.copyto``, 2 passes) of an array of the same
size gives the bandwidth the device reaches on simple streaming, so
kernel/copy near 1 means the kernel is limited by memory, as it should be.
(Sampling, mu + sigma * eps, is plain CuPy arithmetic; bench/step_time.py
times it as a phase of the step.)  Times are CUDA
event medians over repeated launches.  Without CuPy or a GPU it prints
"skipped: no GPU" and exits 0.

    python bench/kernel.py [--size 11200000] [--out kernel.json]
"""
import argparse
import statistics

from _common import machine, print_table, write_json

from chainer.backends import cuda

from chainer_vogn import optimizer


def gpu_missing():
    """Why the GPU cannot be used, or None when it can."""
    if not cuda.available:
        return 'CuPy is not installed'
    try:
        if cuda.cupy.cuda.runtime.getDeviceCount() < 1:
            return 'no CUDA device'
    except Exception as e:  # no driver
        return 'no usable CUDA device ({})'.format(e)
    return None


def event_seconds(run, repeat):
    """Median seconds of ``run()`` on the GPU, by CUDA events."""
    cupy = cuda.cupy
    run()  # compile and warm up
    times = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        run()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1000)
    return statistics.median(times)


def bench(size, dtype, repeat):
    """Seconds and bytes/s of the copy and the update on ``size`` values."""
    cupy = cuda.cupy
    rng = cupy.random.RandomState(0)
    g, h, mu = (rng.standard_normal(size, dtype=dtype) for _ in range(3))
    m = cupy.zeros(size, dtype)
    s = cupy.ones(size, dtype)
    w = cupy.empty_like(mu)
    nbytes = mu.nbytes
    update = optimizer._update_kernel()
    cases = {
        'copy': (lambda: cupy.copyto(w, mu), 2),
        'update': (lambda: update(g, h, 1e-3, 0.9, 0.999, 2e-5, 1e-3, 0.5,
                                  False, mu, m, s), 8),
    }
    result = {}
    for name, (run, passes) in cases.items():
        seconds = event_seconds(run, repeat)
        result[name] = {'seconds': seconds,
                        'bytes_per_s': passes * nbytes / seconds}
    result['update']['over_copy'] = (result['update']['bytes_per_s'] /
                                     result['copy']['bytes_per_s'])
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=11200000,
                        help='values per array (default: ResNet-18 size)')
    parser.add_argument('--repeat', type=int, default=50)
    parser.add_argument('--smoke', action='store_true',
                        help='a small array, a few launches')
    parser.add_argument('--out', help='write the results as JSON here')
    args = parser.parse_args()
    if args.smoke:
        args.size, args.repeat = 4096, 3
    why = gpu_missing()
    if why:
        print('skipped: no GPU ({})'.format(why))
        write_json(args.out, {'skipped': why})
        return
    import numpy
    results = {dtype: bench(args.size, numpy.dtype(dtype), args.repeat)
               for dtype in ('float32', 'float64')}
    print_table(['dtype', 'kernel', 'seconds', 'GB/s', 'over copy'],
                [[dtype, name, r[name]['seconds'],
                  r[name]['bytes_per_s'] / 1e9,
                  r[name].get('over_copy', 1.0)]
                 for dtype, r in results.items() for name in r])
    write_json(args.out, {'machine': machine(0), 'size': args.size,
                          'results': results})


if __name__ == '__main__':
    main()
