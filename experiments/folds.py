"""Runs an experiment on every fold of the 5-fold patient split, then scores all its test patients as one set.

  python -m experiments.folds EXPERIMENT --data-dir DIR [--parallel N] [--out DIR] [EXPERIMENT'S FLAGS...]
  python -m experiments.folds EXPERIMENT --members --data-dir DIR [--parallel N] [--out DIR] [FLAGS...]

Each fold is `python -m experiments.EXPERIMENT --fold K ...` in a process of its own, N at once (on
an accelerator the N share its memory, each given 1/N of it; on a CPU leave N at 1), logging to
`OUT/logs/foldK.txt`. A fold that finished is kept and an unfinished one resumed, so the same
command continues after an interruption. Then each fold's run predicts its own test patients
(`jaxbrain predict`; a segmentation run with `--seg-run`) into `OUT/predictions/foldK`, and
`jaxbrain evaluate` scores the five outputs as one set of patients, each predicted by the one run
that never saw it: the table it prints and `OUT/evaluate.json`. Recipes are compared on
validation (`python -m experiments.report` prints the folds' mean validation Dice), never on this.

With `--members` the five runs are the members of an ensemble on the seed's split (`--member K`:
the seed's training patients in five folds, the seed's validation patients held out of all of
them), and what follows the training is `jaxbrain ensemble`: the ensemble in `OUT/ensemble`, its
decisions chosen on the decision set, its and each member's figures there printed. Nothing of it
reads the seed's test patients; predict them with the ensemble once every choice is made.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jaxbrain.config import Config
from jaxbrain.data import kaggle3m
from jaxbrain.data.splits import NUM_FOLDS
from jaxbrain.errors import ConfigError, UserError, run_entry_point
from jaxbrain.files import write_json
from jaxbrain.folders import RunDir
from jaxbrain.localize.ensemble import format_table as ensemble_table, make_ensemble
from jaxbrain.localize.evaluate import evaluate, format_table
from jaxbrain.localize.predict import predict
from jaxbrain.runs import finished, read_json, read_split

from experiments.common import resolve
from experiments.configs import EXPERIMENTS

FLAGS_SET_HERE = ('--fold', '--member', '--resume', '--overwrite', '--run-name')


class FoldsError(UserError, RuntimeError):
  """A fold's run that failed; its log says why."""


def fold_configs(experiment: str, flags: list[str], per: str = '--fold') -> list[Config]:
  """Each fold's config, as `python -m experiments.EXPERIMENT FLAGS --fold K` (`per` '--member':
  `--member K`) resolves it. Refuses the flags this command sets per fold, and the embedded phantom
  data (no folders to predict)."""
  if experiment not in EXPERIMENTS:
    raise ConfigError(f'unknown experiment {experiment!r}; one of {", ".join(sorted(EXPERIMENTS))}')
  given = [f for f in flags if f.split('=')[0] in FLAGS_SET_HERE]
  if given:
    raise ConfigError(f'{given[0].split("=")[0]} is set by experiments.folds (each fold its own run, finished folds '
                      'kept, unfinished ones resumed); leave it out, and delete a fold\'s run folder to run it again')
  with contextlib.redirect_stdout(io.StringIO()):
    configs = [resolve(EXPERIMENTS[experiment], [*flags, per, str(k)])[0] for k in range(NUM_FOLDS)]
  if not configs[0].data.data_dir:
    raise ConfigError('--data-dir is needed: the folds\' test patients are predicted from their folders')
  return configs


def fold_state(run: Path) -> str:
  """'finished' (`runs.finished`: usable), 'started' (a config.json: resumable) or 'new'."""
  if finished(run):
    return 'finished'
  return 'started' if RunDir(run).config.is_file() else 'new'


def train_folds(experiment: str, flags: list[str], run_dirs: list[Path], logs: Path, parallel: int = 1,
                poll_seconds: float = 5.0, per: str = '--fold') -> None:
  """Trains every fold (`per` '--member': member) that has not finished, `parallel` at a time, each in its own process; raises
  `FoldsError` naming the logs of the folds that failed once the others are done. On Ctrl-C every
  running fold is interrupted (each checkpoints first) and waited for."""
  logs.mkdir(parents=True, exist_ok=True)
  env = dict(os.environ)
  if parallel > 1:
    env.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', f'{0.9 / parallel:.2f}')
  pending = [k for k, run in enumerate(run_dirs) if fold_state(run) != 'finished']
  for k in sorted(set(range(len(run_dirs))) - set(pending)):
    print(f'fold {k}: finished before, kept ({run_dirs[k]})', flush=True)
  running, failed, start = {}, [], time.monotonic()
  try:
    while pending or running:
      while pending and len(running) < parallel:
        k = pending.pop(0)
        resume = fold_state(run_dirs[k]) == 'started'
        command = [sys.executable, '-m', f'experiments.{experiment}', *flags, per, str(k), '--no-progress',
                   *(['--resume'] if resume else [])]
        log = open(logs / f'{per.strip("-")}{k}.txt', 'a')
        running[k] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        print(f'fold {k}: {"resumed" if resume else "started"}, log in {log.name}', flush=True)
      time.sleep(poll_seconds if running else 0)
      for k, (process, log) in list(running.items()):
        if process.poll() is None:
          continue
        log.close()
        del running[k]
        minutes = (time.monotonic() - start) / 60
        if process.returncode:
          failed.append(k)
          print(f'fold {k}: failed (exit {process.returncode}) at {minutes:.1f} min', flush=True)
        else:
          print(f'fold {k}: finished at {minutes:.1f} min ({run_dirs[k]})', flush=True)
  except KeyboardInterrupt:
    for process, log in running.values():
      process.send_signal(signal.SIGINT)
      process.wait()
      log.close()
    raise
  if failed:
    raise FoldsError(f'fold(s) {", ".join(map(str, failed))} failed; see '
                     f'{", ".join(str(logs / f"{per.strip(chr(45))}{k}.txt") for k in failed)}'
                     ' (the finished folds are kept: fix the cause and run the same command again)')


def predict_folds(run_dirs: list[Path], data_dir: Path, out: Path, segment: bool) -> list[Path]:
  """Each fold's run predicts the patients of its split.json's test side (their folders in
  `data_dir`) into `out/foldK`, replacing an earlier prediction there."""
  folders: dict[str, set[Path]] = {}
  for record in kaggle3m.scan(data_dir):
    folders.setdefault(record.patient, set()).add(record.image_path.parent)
  outputs = []
  for k, run in enumerate(run_dirs):
    test = read_split(run)['test']
    missing = [p for p in test if p not in folders]
    if missing:
      raise kaggle3m.DataError(f'{data_dir}: lacks test patient(s) {", ".join(missing)} of {run}')
    inputs = sorted(folder for patient in test for folder in folders[patient])
    outputs.append(out / f'fold{k}')
    roles = {'run_dir': None, 'seg_run_dir': run} if segment else {'run_dir': run}
    predict(inputs, out_dir=outputs[-1], overwrite=True, **roles)
    print(f'fold {k}: its {len(test)} test patient(s) predicted by {run.name} into {outputs[-1]}', flush=True)
  return outputs


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m experiments.folds', description=__doc__.splitlines()[0],
                                   epilog='example: python -m experiments.folds seg03 --data-dir /data/kaggle_3m '
                                          '--parallel 5  (any other flag goes to the experiment)')
  parser.add_argument('experiment', help='an experiment module, such as seg01 or exp21')
  parser.add_argument('--parallel', type=int, default=1, help='folds trained at once (default: 1)')
  parser.add_argument('--members', action='store_true', help='train the five members of an ensemble on the seed\'s '
                      'split (--member K) and write the ensemble, its decisions chosen on the decision set')
  parser.add_argument('--out', help='predictions, logs and evaluate.json (default: beside the runs, as '
                                    '<workdir>/<experiment>/<fold 0\'s run name with fold0 -> folds>)')
  args, flags = parser.parse_known_args(argv)

  def body() -> int:
    if args.parallel < 1:
      raise ConfigError(f'--parallel must be at least 1, got {args.parallel}')
    per = '--member' if args.members else '--fold'
    configs = fold_configs(args.experiment, flags, per)
    run_dirs = [c.run_dir.path for c in configs]
    out = Path(args.out) if args.out else run_dirs[0].with_name(configs[0].group_name)
    train_folds(args.experiment, flags, run_dirs, out / 'logs', args.parallel, per=per)
    data_dir = Path(configs[0].data.data_dir)
    if args.members:
      ensemble = RunDir(out / 'ensemble')
      if ensemble.decision_set.is_file():
        print(f'the ensemble was written before, kept: {ensemble}')
        figures = read_json(ensemble.decision_set)
      else:
        figures = make_ensemble(run_dirs, ensemble.path, data_dir)
      print(ensemble_table(figures))
      print(f'the ensemble of the {NUM_FOLDS} members, its decisions chosen on the decision set: {out / "ensemble"}')
      return 0
    outputs = predict_folds(run_dirs, data_dir, out / 'predictions', configs[0].task.name == 'segment')
    result = evaluate(outputs, data_dir, configs[0].bootstrap_samples)
    write_json(out / 'evaluate.json', result)
    print(format_table(result))
    print(f'all {NUM_FOLDS} folds\' test patients, each predicted by the run that never saw it: {out / "evaluate.json"}')
    return 0

  return run_entry_point('python -m experiments.folds', body, debug='--debug' in flags)


if __name__ == '__main__':
  sys.exit(main())
