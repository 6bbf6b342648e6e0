"""A finished run, loaded from its directory: config, model, selected weights and decisions.

The one place that reads a run directory back (`config.json` of either schema, `decision.json`,
the orbax checkpoint folders); the runner (on --resume), `jaxbrain predict` and the Spark job use it.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxbrain import models
from jaxbrain.config import Config
from jaxbrain.data.kaggle3m import fingerprint
from jaxbrain.data.phantom import INSTITUTIONS
from jaxbrain.data.transforms import Preprocessing
from jaxbrain.decisions import Decision, Detector, GateChoice
from jaxbrain.errors import UserError
from jaxbrain.folders import RunDir, tested_variables
from jaxbrain.postprocess import MaskRule


class RunError(UserError, ValueError):
  """A run directory that cannot be used for this purpose."""


@dataclasses.dataclass
class LoadedRun:
  config: Config
  model: Any
  variables: dict
  preprocessing: Preprocessing
  label_threshold: float  # a classifier's: tumor at probability >= it; a segmenter's: its mask rule's pixel threshold
  phantom_only: bool  # every training patient was a synthetic phantom
  directory: Path
  checkpoint: Path  # the step folder the variables came from
  mask_rule: MaskRule  # a segmentation run's post-processing (the default for runs that stored none)
  members: tuple = ()  # an ensemble's member runs, whose probabilities are averaged; () for a single run
  detector: Detector | None = None  # a segmenter's own detector (`jaxbrain gate --seg-run` alone; a bundle's)
  bundle: dict | None = None  # a model bundle's model.json (`bundle.load_bundle`); None for a run


def read_json(path: Path) -> dict:
  """A JSON file of a run; a damaged one is a `RunError` naming it."""
  try:
    return json.loads(path.read_text(encoding='utf-8'))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RunError(f'{path}: damaged (not valid JSON: {e})') from None


def read_config(run_dir: Path) -> tuple[Config, dict]:
  """(config, the whole config.json) of a run, written by this version (schema 2) or an earlier one."""
  path = RunDir.of(run_dir).config
  if not path.is_file():
    raise RunError(f'{run_dir}: not a jaxbrain run directory (no config.json)')
  header = read_json(path)
  if not isinstance(header, dict) or not isinstance(header.get('config'), dict):
    raise RunError(f'{path}: damaged (no "config" object)')
  try:
    return Config.from_json(header), header
  except (UserError, TypeError, KeyError) as e:
    raise RunError(f'{path}: damaged or written by another version ({type(e).__name__}: {e})') from None


def task_of(run_dir: str | Path) -> str:
  """'classify' or 'segment': the task of a run, or of an ensemble's members."""
  folder = RunDir.of(run_dir)
  if folder.ensemble.is_file():
    return str(read_json(folder.ensemble).get('task'))
  return read_config(folder.path)[0].task.name


def read_decision(run_dir: str | Path) -> Decision:
  """A run's (or an ensemble's) decisions; a damaged decision.json is a `RunError` naming it."""
  return Decision.from_json(read_json(RunDir.of(run_dir).decision))


def finished(run_dir: str | Path) -> bool:
  """Whether a run can be used: its decision.json, written once its test evaluation and decisions
  are done (an ensemble and its members carry one too). A run stopped earlier (in training,
  validation or test) has none, and `resume_command` finishes it."""
  return RunDir.of(run_dir).decision.is_file()


def resume_command(run_dir: str | Path) -> str:
  """The command that finishes the run in `run_dir`: the one that started it (config.json's
  `command`, from its `cwd`) with --resume; for a run started from Python, the call to make."""
  run = RunDir.of(run_dir)
  header = read_json(run.config) if run.config.is_file() else {}
  if not header.get('command'):
    return f'train_and_evaluate(config, resume=True), with the config of {run.config}'
  words = [w for w in shlex.split(header['command']) if w not in ('--resume', '--overwrite')]
  line = shlex.join([*words, '--resume'])
  cwd = header.get('cwd')
  return line if not cwd or Path(cwd) == Path.cwd() else f'cd {shlex.quote(cwd)} && {line}'


def selected_checkpoint(run_dir: Path, decision: Decision) -> Path:
  """The checkpoint the run measured on test (decision.json), else, for runs written before it was
  recorded, the best (else last) one."""
  run = RunDir.of(run_dir)
  if decision.checkpoint is not None:
    folder = run.checkpoint(decision.checkpoint)
    if not run.checkpoint_state(folder).is_dir():
      raise RunError(f'{run_dir}: the selected checkpoint {decision.checkpoint} (decision.json) is missing')
    return folder
  for kind in RunDir.CHECKPOINT_KINDS:
    folder = run.newest_checkpoint(kind)
    if folder is not None:
      return folder
  raise RunError(f'{run_dir}: has no complete checkpoint (did the run finish at least one epoch?)')


def trained_on_phantom(run_dir: Path, header: dict) -> bool:
  """Whether every training patient is synthetic (the phantom generator's institution codes)."""
  split_path = RunDir.of(run_dir).split
  if split_path.is_file():
    train = read_json(split_path).get('train', [])
    return bool(train) and all(name.split('_')[1] in INSTITUTIONS for name in train if name.count('_') >= 2)
  return str(header.get('data', '')).startswith('phantom')


def load_run(run_dir: str | Path, task: str) -> LoadedRun:
  """The model, the variables of the checkpoint its test metrics describe, and its decisions (the
  threshold; a segmenter's mask post-processing), from a run directory of `task`, or an ensemble's
  folder (`load_ensemble`). Refuses a run whose weights are not all finite."""
  run_dir = Path(run_dir)
  if RunDir(run_dir).ensemble.is_file():
    return load_ensemble(run_dir, task)
  config, header = read_config(run_dir)
  if config.task.name != task:
    wanted = {'classify': 'a classification run (--run)', 'segment': 'a segmentation run (--seg-run)'}[task]
    raise RunError(f'{run_dir}: is a {config.task.name} run, but {wanted} is needed here')
  if config.data.type_target is not None:
    raise RunError(f'{run_dir}: is a tumour-type model (--type-target {config.data.type_target}: its probability is '
                   'the patient\'s type, not a tumour\'s presence); python -m experiments.radiogenomics reads it')
  if not finished(run_dir):
    raise RunError(f'{run_dir}: unfinished (no decision.json: it stopped before its test evaluation and decisions '
                   f'were written), so it cannot be used; finish it with: {resume_command(run_dir)}')
  decision = read_decision(run_dir)
  folder = selected_checkpoint(run_dir, decision)
  import orbax.checkpoint as ocp  # here, where a run's checkpoint is read: a bundle's loading needs none

  try:
    state = ocp.StandardCheckpointer().restore(RunDir.checkpoint_state(folder).resolve())
  except Exception as e:  # noqa: BLE001 -- orbax raises many kinds on damaged files
    raise RunError(f'{folder}: the checkpoint cannot be read ({type(e).__name__}); the run is damaged') from None
  if not isinstance(state, dict) or not {'params', 'batch_stats'} <= set(state):
    raise RunError(f'{folder}: the checkpoint does not hold a model state; the run is damaged')
  variables = tested_variables(state)
  if not all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(variables)):
    raise RunError(f'{run_dir}: the checkpoint holds non-finite weights (NaN or inf: a diverged run); '
                   'it would label every slice alike, so it is refused')
  return LoadedRun(config, models.build(config.model), variables,
                   Preprocessing.from_name(config.data.preprocess, config.data.image_size),
                   float(decision.threshold), trained_on_phantom(run_dir, header), run_dir, folder,
                   decision.mask_rule or MaskRule(), detector=own_detector(run_dir))


def own_detector(run_dir: Path) -> Detector | None:
  """A segmenter's own detector (`jaxbrain gate --seg-run` alone), or None when none was chosen."""
  path = RunDir.of(run_dir).own_detector
  return GateChoice.from_json(read_json(path)).detector if path.is_file() else None


def load_ensemble(ensemble_dir: Path, task: str) -> LoadedRun:
  """An ensemble (`jaxbrain ensemble`): its members loaded as runs, its own decisions (chosen on the
  decision set with the ensemble itself); model, variables and config are its first member's, for
  what all members share (task, inputs)."""
  folder = RunDir(ensemble_dir)
  record = read_json(folder.ensemble)
  members = tuple(load_run(folder.path / name, task) for name in record.get('members', []))
  if not members:
    raise RunError(f'{folder.ensemble}: names no members; the ensemble is damaged')
  # An ensemble being made has no decisions yet: `jaxbrain ensemble` scores it to choose them.
  decision = read_decision(folder.path) if finished(folder.path) else Decision()
  first = members[0]
  return LoadedRun(first.config, first.model, first.variables, first.preprocessing,
                   float(decision.threshold), any(m.phantom_only for m in members), folder.path, folder.members,
                   decision.mask_rule or MaskRule(), members, own_detector(folder.path))


def read_split(run_dir: Path) -> dict:
  """A run's split.json: {'train': [...], 'validation': [...], 'test': [...]} patient lists."""
  path = RunDir.of(run_dir).split
  if not path.is_file():
    raise RunError(f'{run_dir}: has no split.json (written by an older version?)')
  return read_json(path)


def check_data(data_dir: str | Path, *run_dirs: Path) -> None:
  """Refuses `data_dir` unless it holds the data each run of `run_dirs` (an ensemble's members, a
  pair) was trained on: that folder or an identical copy, by the content fingerprint in its
  split.json. Patient names alone do not say it: choices made on other images are wrong."""
  found = fingerprint(data_dir)
  for run_dir in run_dirs:
    expected = read_split(run_dir).get('data_fingerprint')
    if expected and found != expected:
      trained_on = read_config(run_dir)[1].get('data', 'another folder')
      raise RunError(f'{data_dir}: is not the data {run_dir} was trained on ({trained_on}): its content differs '
                     f'(fingerprint {found}, not {expected}); give that folder or an identical copy')


def check_same_split(classifier: LoadedRun, segmenter: LoadedRun) -> dict:
  """The split two runs share; refuses runs trained on different patients (a choice made on one's
  validation patients would be made on patients the other trained on)."""
  first, second = read_split(classifier.directory), read_split(segmenter.directory)
  for part in ('train', 'validation', 'test'):
    if sorted(first.get(part, [])) != sorted(second.get(part, [])):
      raise RunError(f'{classifier.directory} and {segmenter.directory}: their split.json differ in {part} patients; '
                     'a pipeline of the two is chosen and measured on the patients of one split (train both with the '
                     'same --split, --seed and --fold on the same data)')
  return first


def gate_path(segmenter: LoadedRun, classifier: LoadedRun) -> Path:
  """Where the gate chosen for this pair lives: in the segmentation run, named by the classifier's
  experiment, run and checkpoint (not its path, so that runs can move together)."""
  classifier_run = RunDir(classifier.directory)
  checkpoint = 'ensemble' if classifier.members else classifier_run.checkpoint_name(classifier.checkpoint)
  return RunDir(segmenter.directory).gate(classifier.config.experiment, classifier_run.name, checkpoint)


def read_gate(segmenter: LoadedRun, classifier: LoadedRun) -> GateChoice | None:
  """What `jaxbrain gate` chose for this pair (its gate and detector), or None when nothing was chosen."""
  path = gate_path(segmenter, classifier)
  return GateChoice.from_json(read_json(path)) if path.is_file() else None
