"""Command-line overrides for an experiment's frozen config, and the call to the one runner."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from jaxbrain import configure_cpu
from jaxbrain.allocator import restart_with_tcmalloc
from jaxbrain.data.transforms import AUGMENTED, VARIANTS
from jaxbrain.errors import run_entry_point
from jaxbrain.models.resnet import FROZEN_BN
from jaxbrain.train import INITS, Interrupted, TrainConfig, train_and_evaluate
from jaxbrain.train.config import OPTIMIZERS, SCHEDULES
from jaxbrain.train.sharding import initialize_distributed

# With no --data-dir the experiment runs on the embedded phantom data with this demo budget
# (under 10 minutes on a 2-core CPU); any of these given on the command line wins.
PHANTOM_BUDGET = {
    'classify': {'image_size': 128, 'epochs': 5, 'learning_rate': 0.01, 'init': 'scratch', 'keep_checkpoints': 1},
    'segment': {'image_size': 128, 'epochs': 5, 'init': 'scratch', 'keep_checkpoints': 1},
}


def build_parser(config: TrainConfig) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog=f'python -m experiments.{config.experiment}',
      description=f'{config.experiment}: {config.arch} {config.strategy}, {config.preprocess}, batch '
                  f'{config.batch_size}, {config.epochs} epochs, SGD lr {config.learning_rate} momentum '
                  f'{config.momentum}. Without --data-dir: a short demo on synthetic phantom data.')
  add = parser.add_argument
  add('--data-dir', help='the kaggle_3m folder of the LGG dataset (.tif or .png); default: phantom demo')
  add('--split', choices=('patient', 'slice'),
      help='patient (default): train / validation / test patients, about 70/15/15; slice: the report\'s random 85/15 '
           'slice split with 15%% of all slices carved from the 85 for validation (patients leak)')
  add('--fold', type=int, help='fold 0-4 of a 5-fold patient split as test (validation carved from the other folds)')
  add('--epochs', type=int, help='passes over the training slices (with --resume: may only be raised)')
  add('--batch-size', type=int, help='slices per training step (a multiple of the devices)')
  add('--image-size', type=int, help='resize target (the report: 224)')
  add('--preprocess', choices=VARIANTS + AUGMENTED,
      help='the report\'s variants, or one with random scale/rotation (_affine, for segmentation)')
  add('--learning-rate', type=float, help='peak learning rate')
  add('--momentum', type=float, help='SGD momentum')
  add('--optimizer', choices=OPTIMIZERS)
  add('--lr-schedule', choices=SCHEDULES, help='constant (the report) or cosine decay to 0')
  add('--weight-decay', type=float, help='L2 weight decay (default 0, as the report)')
  add('--unet-width', type=int, help='segmentation: channels of the first ResUNet level')
  add('--compute-dtype', choices=('float32', 'bfloat16'), help='bfloat16: mixed precision (GPU/TPU)')
  add('--init', choices=INITS, help='imagenet (needs the torchvision weights file) or scratch')
  add('--weights', help='torchvision .pth or .safetensors file for --init imagenet')
  add('--workdir', help='output root (default: checkpoints)')
  add('--run-name', help='run folder name under WORKDIR/EXPERIMENT/')
  add('--seed', type=int, help='initialization, shuffling, augmentation and the split (fixed before tuning)')
  add('--no-feature-cache', dest='feature_cache', action='store_false', default=None,
      help='feature extractor: run the frozen backbone every step instead of caching its features')
  add('--frozen-bn', choices=FROZEN_BN,
      help='feature extractor: the frozen backbone\'s BatchNorm uses its running (ImageNet) statistics (running, '
           'the default; Keras\'s convention, needed by the feature cache) or batch statistics while updating the '
           'running ones (batch: what PyTorch does with requires_grad=False in model.train(); no feature cache)')
  add('--keep-checkpoints', type=int,
      help=f'how many of the newest checkpoints to keep for --resume, besides the best one (default '
           f'{config.keep_checkpoints}; the phantom demo keeps 1)')
  add('--bootstrap-samples', type=int, help='patient bootstrap resamples for 95%% intervals (0: none)')
  add('--resume', action='store_true', help='continue from the newest complete checkpoint of this run')
  add('--overwrite', action='store_true', help='delete an existing run of the same name first')
  add('--distributed', action='store_true',
      help='multi-process: call jax.distributed.initialize(), which detects Slurm, Open MPI or TPU/GKE')
  add('--coordinator-address', help='multi-process: host:port of process 0 (implies --distributed)')
  add('--num-processes', type=int, help='multi-process: number of processes')
  add('--process-id', type=int, help='multi-process: this process (0 writes logs, plots and metrics)')
  add('--no-progress', dest='progress', action='store_false', help='no progress bars')
  add('--debug', action='store_true', help='on an unexpected error, print the traceback instead of writing a log')
  _show_defaults(parser, config)
  return parser


def _show_defaults(parser: argparse.ArgumentParser, config: TrainConfig) -> None:
  """Appends each setting's default for this experiment (and the phantom demo's, where it differs)
  to its help text, and an example to the description."""
  demo = PHANTOM_BUDGET[config.task]
  for action in parser._actions:
    if action.dest in {f.name for f in dataclasses.fields(config)} and action.dest != 'data_dir':
      default = getattr(config, action.dest)
      shown = f'default: {default}' + (f'; demo without --data-dir: {demo[action.dest]}'
                                       if action.dest in demo and demo[action.dest] != default else '')
      action.help = f'{action.help or action.dest.replace("_", " ")} ({shown})'
  parser.epilog = (f'example: python -m experiments.{config.experiment} --data-dir ../shared/data/lgg/kaggle_3m '
                   '--init scratch --image-size 128 --epochs 10')


def resolve(config: TrainConfig, argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
  """The experiment's config with the command line's overrides (and the phantom budget) applied."""
  args = build_parser(config).parse_args(argv)
  run_flags = ('resume', 'overwrite', 'distributed', 'progress', 'coordinator_address', 'num_processes', 'process_id',
               'debug')
  changes = {k: v for k, v in vars(args).items() if v is not None and k not in run_flags}
  if 'data_dir' not in changes:
    budget = {k: v for k, v in PHANTOM_BUDGET[config.task].items() if k not in changes}
    changes.update(budget)
    print(f'No --data-dir given: running a short demo on the embedded synthetic phantom data with {budget}. '
          f'For the real study pass --data-dir /path/to/kaggle_3m (and put the ImageNet weights in place, see '
          f'README "Pretrained weights").', flush=True)
  resolved = config.replace(**changes)
  print('resolved config: ' + ', '.join(f'{k}={v}' for k, v in dataclasses.asdict(resolved).items()), flush=True)
  return resolved, args


def main(config: TrainConfig, argv: list[str] | None = None) -> dict:
  """Entry point of every experiment module (`argv=None`: the command line, run with tcmalloc).

  Returns the final metrics; a user's mistake exits 2 with one line, an interruption 130 (after
  checkpointing), anything unexpected 1 with the traceback in a log (`--debug` prints it)."""
  if argv is None:
    restart_with_tcmalloc()
  configure_cpu()
  debug = '--debug' in (sys.argv[1:] if argv is None else argv)
  result = {}

  def body() -> int:
    resolved, args = resolve(config, argv)
    result['run_dir'] = Path(resolved.workdir) / resolved.experiment / resolved.resolved_run_name
    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id, force=args.distributed)
    try:
      result['metrics'] = train_and_evaluate(resolved, resume=args.resume, overwrite=args.overwrite,
                                             progress=args.progress)
    except Interrupted as e:
      print(e, file=sys.stderr)
      return 130
    return 0

  code = run_entry_point(f'python -m experiments.{config.experiment}', body, debug,
                         log_folder=lambda: result.get('run_dir') if result.get('run_dir', Path('/')).is_dir() else None)
  if code:
    sys.exit(code)
  return result['metrics']
