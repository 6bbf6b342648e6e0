"""Command-line overrides for an experiment's frozen config, and the call to the one runner."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from jaxbrain import compilation_cache, configure_cpu
from jaxbrain.allocator import missing_tcmalloc_notice, restart_with_tcmalloc
from jaxbrain.config import Config
from jaxbrain.errors import run_entry_point
from jaxbrain.flags import Parser, add_debug_flag
from jaxbrain.train import Interrupted, train_and_evaluate
from jaxbrain.train.sharding import initialize_distributed

# With no --data-dir the experiment runs on the embedded phantom data with this demo budget (a few
# minutes of a small CPU; docs/performance.md has the figures); any of these given on the command line wins.
PHANTOM_BUDGET = {
    'classify': {'image_size': 128, 'epochs': 5, 'learning_rate': 0.01, 'init': 'scratch'},
    'segment': {'image_size': 128, 'epochs': 5, 'init': 'scratch'},
}


def phantom_budget(config: Config) -> dict:
  """The demo's settings for `config`: its task's budget, keeping the learning rate of a recipe made
  for random initialization (the raised rate is for the report's SGD, tuned for ImageNet weights)."""
  budget = dict(PHANTOM_BUDGET[config.task.name])
  if config.model.init == 'scratch':
    budget.pop('learning_rate', None)
  return budget


RUN_FLAGS = ('resume', 'overwrite', 'distributed', 'progress', 'coordinator_address', 'num_processes', 'process_id',
             'debug')


def _argument(name: str, field, default, demo) -> tuple[list[str], dict]:
  """argparse's (flags, keywords) for one config setting: its type, choices, help and defaults."""
  flag, kind = '--' + name.replace('_', '-'), str(field.type)
  if kind == 'bool':  # a switch: the flag turns the default off (--no-...) or on
    shown = 'on by default; this flag turns it off' if default else 'off by default'
  else:  # a default of None is described by the setting's help
    shown = f'default: {default}' * (default is not None)
  shown = '; '.join(filter(None, [shown, f'demo without --data-dir: {demo}' * (demo is not None and demo != default)]))
  keywords = {'dest': name, 'default': None, 'help': field.metadata['help'] + (f' ({shown})' if shown else '')}
  if kind == 'bool':
    flag = f'--no-{name.replace("_", "-")}' if default else flag
    return [flag], {**keywords, 'action': 'store_const', 'const': not default}
  if kind.startswith('tuple'):
    keywords.update(nargs='*', type=int if 'int' in kind else str)
  elif 'int' in kind or 'float' in kind:
    keywords['type'] = int if 'int' in kind else float
  if field.metadata['choices']:
    keywords['choices'] = field.metadata['choices']
  return [flag], keywords


def build_parser(config: Config) -> argparse.ArgumentParser:
  """The experiment's command line: one flag per setting of its config (generated from the dataclass
  fields, with this experiment's defaults and the phantom demo's), and the run's own flags."""
  parser = Parser(
      prog=f'python -m experiments.{config.experiment}',
      description=f'{config.experiment}: {config.describe()}. Without --data-dir: a short demo on synthetic phantom '
                  'data.',
      epilog=f'example: python -m experiments.{config.experiment} --data-dir ../shared/data/lgg/kaggle_3m --init scratch '
             '--image-size 128 --epochs 10')
  demo = phantom_budget(config)
  values = config.flat()
  for name, _, field in config.flags():
    flags, keywords = _argument(name, field, values[name], demo.get(name))
    parser.add_argument(*flags, **keywords)
  add = parser.add_argument
  add('--resume', action='store_true', help='continue from the newest complete checkpoint of this run')
  add('--overwrite', action='store_true', help='delete an existing run of the same name first')
  add('--distributed', action='store_true',
      help='multi-process: call jax.distributed.initialize(), which detects Slurm, Open MPI or TPU/GKE')
  add('--coordinator-address', help='multi-process: host:port of process 0 (implies --distributed)')
  add('--num-processes', type=int, help='multi-process: number of processes')
  add('--process-id', type=int, help='multi-process: this process (0 writes logs, plots and metrics)')
  add('--no-progress', dest='progress', action='store_false', help='no progress bars')
  add_debug_flag(parser)
  return parser


def resolve(config: Config, argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
  """The experiment's config with the command line's overrides (and the phantom budget) applied."""
  args = build_parser(config).parse_args(argv)
  changes = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()
             if v is not None and k not in RUN_FLAGS}  # lists from nargs='*' flags: the fields hold tuples
  if 'data_dir' not in changes:
    budget = {k: v for k, v in phantom_budget(config).items() if k not in changes}
    changes.update(budget)
    print(f'No --data-dir given: running a short demo on the embedded synthetic phantom data with {budget}. '
          f'For the real study pass --data-dir /path/to/kaggle_3m (and put the ImageNet weights in place, see '
          f'docs/training.md, "Pretrained weights").', flush=True)
  resolved = config.with_flags(**changes)
  print('resolved config: ' + ', '.join(f'{k}={v}' for k, v in resolved.flat().items()), flush=True)
  return resolved, args


def main(config: Config, argv: list[str] | None = None) -> dict:
  """Entry point of every experiment module (`argv=None`: the command line, run with tcmalloc).

  Returns the final metrics; a user's mistake exits 2 with one line, an interruption 130 (after
  checkpointing), anything unexpected 1 with the traceback in a log (`--debug` prints it)."""
  if argv is None:
    restart_with_tcmalloc()
    if notice := missing_tcmalloc_notice():
      print(notice, file=sys.stderr)
  configure_cpu()
  debug = '--debug' in (sys.argv[1:] if argv is None else argv)
  result = {}

  def body() -> int:
    resolved, args = resolve(config, argv)
    result['run_dir'] = resolved.run_dir.path
    compilation_cache.enable(resolved.workdir)
    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id, force=args.distributed)
    command = shlex.join([*build_parser(config).prog.split(), *(sys.argv[1:] if argv is None else argv)])
    try:
      result['metrics'] = train_and_evaluate(resolved, resume=args.resume, overwrite=args.overwrite,
                                             progress=args.progress, command=command)
    except Interrupted as e:
      print(e, file=sys.stderr)
      return 130
    return 0

  code = run_entry_point(f'python -m experiments.{config.experiment}', body, debug,
                         log_folder=lambda: result.get('run_dir') if result.get('run_dir', Path('/')).is_dir() else None)
  if code:
    sys.exit(code)
  return result['metrics']
