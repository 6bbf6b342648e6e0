"""A run's finish: the checkpoint validation selected, evaluated once on test; the task's decisions
(chosen on validation); the evaluators named in the config; then metrics.json, decision.json, the
plots, the task's test files, the run page and the closing lines. Evaluators are imported by name
(`config.task.evals`, as big_vision's `config.evals`), so the runner never imports them."""
from __future__ import annotations

import importlib
import importlib.util
import shutil
from pathlib import Path
from typing import Callable

import jax

from jaxbrain.config import Config
from jaxbrain.data.arrays import TestSlices
from jaxbrain.decisions import Decision, write_decision
from jaxbrain.errors import ConfigError
from jaxbrain.files import write_json
from jaxbrain.folders import RunDir
from jaxbrain.pages import write_run_page
from jaxbrain.text import counted
from jaxbrain.train.checkpoints import Checkpoints
from jaxbrain.train.outputs import RunWriter, plot_curves, read_history
from jaxbrain.train.progress import Progress

EVALUATORS = 'jaxbrain.evaluators'  # the package evaluators named in the config come from, imported by name


def check_evaluators(names) -> None:
  """Refuses, before any work, an evaluator name with no module in the evaluators package."""
  missing = [name for name in names if not name.isidentifier() or importlib.util.find_spec(f'{EVALUATORS}.{name}') is None]
  if missing:
    raise ConfigError(f'--evals {" ".join(missing)}: no such evaluator (modules of {EVALUATORS.replace(".", "/")}/)')


def select(checkpoints: Checkpoints, state, at: Progress, metric: str, epochs: int):
  """(state, record) of the checkpoint validation picked: the best one, or the last when every
  validation score was undefined (NaN never wins)."""
  if at.best is None:
    step = int(jax.device_get(state.step))
    return state, {'epoch': epochs, 'metric': f'validation {metric}', 'value': None, 'checkpoint': f'last/{step}',
                   'note': f'validation {metric} was undefined in every epoch: the last checkpoint is used'}
  selected, _ = checkpoints.restore(state, which='best')
  step = int(jax.device_get(selected.step))
  return selected, {'epoch': at.best_epoch, 'metric': f'validation {metric}', 'value': at.best,
                    'checkpoint': f'best/{step}'}


def evaluate_selected(task, config: Config, split, selected, outputs_of: Callable, decision_steps: dict,
                      run: RunDir | None) -> tuple[dict, dict, dict, dict]:
  """(validation metrics, test metrics, test outputs, decision) of the selected state: test is
  read once, after the decisions were made on validation; the evaluators add to it. `run` is None
  on processes that write nothing."""
  validation = task.metrics(outputs_of(selected, split.validation), split.validation)
  test_outputs = outputs_of(selected, split.test)
  test = task.test_metrics(test_outputs, split.test)
  decision, decided, decided_outputs = task.decide(
      lambda name, indices: outputs_of(selected, indices, decision_steps[name]), split, run)
  test.update(decided)
  test_outputs.update(decided_outputs)
  if not config.task.evals:
    return validation, test, test_outputs, decision
  data, indices = task.data, split.test
  heatmaps = task.heatmaps(selected.inference_variables())
  handed = TestSlices(data.image[indices], data.mask[indices] > 0, data.label[indices], data.patient[indices],
                      data.slice[indices], test_outputs, heatmaps, config.batch_size)
  for name in config.task.evals:
    test.update(importlib.import_module(f'{EVALUATORS}.{name}').evaluate(handed, run))
  return validation, test, test_outputs, decision


def write_results(run: RunDir, task, config: Config, final: dict, decision: Decision, test_outputs: dict, split,
                  writer: RunWriter) -> None:
  """metrics.json, decision.json, the curves, the task's test files and the run page."""
  write_json(run.final_metrics, final)
  write_decision(run, decision.with_checkpoint(final['selected_checkpoint']['checkpoint']))
  plot_curves(run, read_history(run), tuple(task.headline[:3]))
  writer.hyperparameters(config.flat(), {f'test/{k}': final[k] for k in task.headline if k in final})
  task.write_outputs(run, final, test_outputs, split.test)
  write_run_page(run.path)


def disk_use(run: RunDir, keep: int) -> str:
  """What the run folder holds on disk, its checkpoints apart, and how to keep more of them."""
  def megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob('*') if p.is_file()) / 1e6

  kept = f'the selected one and the newest {keep}' if keep > 1 else 'the selected one and the newest'
  return (f'disk: {megabytes(run.path):.0f} MB in {run}, {megabytes(run.path / "checkpoints"):.0f} MB of them '
          f'checkpoints ({kept}; --keep-checkpoints N keeps N newest)')


def tensorboard_command(run: RunDir) -> str:
  """The command that shows the run's curves in TensorBoard, installing it first where it is missing
  (the runs write its files without it)."""
  command = f'tensorboard --logdir {run.tensorboard}'
  return command if shutil.which('tensorboard') else f'pip install tensorboard && {command}'


POSTPROCESSED_VIEWS = {'native': 'as the model gives them', 'native_postprocessed': 'post-processed as validation chose'}


def print_summary(final: dict, run: RunDir, task, config: Config, seconds: float, resumed: bool = False) -> None:
  """The run's closing lines: the task's test metrics with intervals, the selected epoch, wall
  time (of this process: since the resume for a resumed run), where the outputs are, and the
  commands to paste next."""
  selection = final['selected_checkpoint']

  def shown(metrics: dict) -> str:
    intervals = metrics.get('confidence_95') or {}
    return ', '.join(f'{k} {metrics[k]:.3f}' + (' [{:.3f}, {:.3f}]'.format(*intervals[k]) if k in intervals else '')
                     for k in task.summary_keys if metrics.get(k) is not None)

  side = 'test' if final.get('member') is None else 'the ensemble\'s decision set (the seed\'s validation patients)'
  print(f'{side} ({counted(final["counts"]["test_patients"], "patient")}, used for no choice): {shown(final)}'
        + (f'; 95% intervals {final["confidence_95_note"]}' if final.get('confidence_95_note') else ''), flush=True)
  for key, how in POSTPROCESSED_VIEWS.items():
    if key in final:
      print(f'  at 256x256, masks {how}: {shown(final[key])}', flush=True)
  print(disk_use(run, config.keep_checkpoints), flush=True)
  print(f'selected checkpoint: epoch {selection["epoch"]} by {selection["metric"]}; {seconds / 60:.1f} min {"since the resume" if resumed else "in all"}; '
        f'outputs in {run} (open {run.report} in a browser)\nnext:\n'
        f'  jaxbrain predict PATIENT_FOLDER... {task.predict_flag} {run} --out predictions/\n'
        f'  {tensorboard_command(run)}\n  python -m experiments.report --workdir {config.workdir}',
        flush=True)
