"""train.py that dies like a killed node in the middle of writing a file.

    FAULT=NAME:N python tests/fault_worker.py TRAIN-OPTIONS...

The N-th time this process is about to move a finished temporary file onto
NAME (the last step of chainer_vogn.files.atomic_write), it cuts the
temporary file to half its size and SIGKILLs itself, as a kill during the
write would leave it.
"""
import os
import runpy
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def die_before_nth_replace(name, nth):
    replace = os.replace
    seen = [0]

    def faulty_replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == name:
            seen[0] += 1
            if seen[0] == nth:
                with open(src, 'r+b') as f:
                    f.truncate(os.path.getsize(src) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
        return replace(src, dst, *args, **kwargs)

    os.replace = faulty_replace


if __name__ == '__main__':
    name, nth = os.environ['FAULT'].rsplit(':', 1)
    die_before_nth_replace(name, int(nth))
    sys.argv = [os.path.join(REPO, 'train.py')] + sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name='__main__')
