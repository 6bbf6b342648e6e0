"""`jaxbrain ensemble RUN... --out DIR --data-dir DIR`: several runs used as one.

The members are runs of one task on one seed's patient split (`--member K` runs: each trained on
the seed's training patients outside its fold, none on the seed's validation patients) that take
the same inputs. They are copied into the ensemble's folder with their selected weights only, so
the folder moves as a whole, and `predict`, `gate`, `evaluate` and the Spark job take it wherever
they take a run. The ensemble's probability is the mean of its members' probabilities (a
classifier's slice probabilities; a segmenter's pixel probabilities, before post-processing), and
`predict` reports how far the members disagree; `decision_set.json` says whether that disagreement
marks the ensemble's wrong answers there.

Its decisions are made on the decision set (the members' shared test side: the seed's validation
patients, which no member trained or selected on) with the ensemble itself: a segmenter ensemble
chooses its mask rule as a single run does on validation (`decisions.choose_rule`); a classifier
ensemble keeps the fixed threshold, as a single classifier does. `decision_set.json` holds the
ensemble's and each member's figures there. Nothing here reads the seed's test patients.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import orbax.checkpoint as ocp

from jaxbrain.decisions import Decision, choose_rule, write_decision
from jaxbrain.errors import OutputExistsError
from jaxbrain.files import staged_folder, write_csv, write_json
from jaxbrain.flags import INFERENCE
from jaxbrain.folders import RunDir
from jaxbrain.inference import Scorer
from jaxbrain.localize.gate import patients_slices
from jaxbrain.metrics import decision_metrics, roc_auc, segmentation_metrics
from jaxbrain.runs import LoadedRun, RunError, check_data, load_run, read_config, read_decision, read_split

MEMBER_FILES = ('config', 'split')  # what a member keeps besides its decisions and its selected weights
SAME_SPLIT = ('kind', 'seed', 'data_fingerprint', 'test', 'seed_test')  # what members of one ensemble share


def _inputs(run: LoadedRun) -> dict:
  """What a member takes: members whose inputs differ cannot be scored on one stack of slices."""
  task = run.config.task
  return {'image size': run.config.data.image_size, 'preprocessing': run.config.data.preprocess,
          'context slices': getattr(task, 'context_slices', 0), 'volume scale': getattr(task, 'scale_volumes', False)}


def check_members(runs: Sequence[LoadedRun]) -> dict:
  """The ensemble's split.json: the seed's training patients (every member's train and validation),
  the decision set as validation, the seed's test patients as test. Refuses, naming the member, a
  run that is not an ensemble member (`--member K`), members of different splits or data, the same
  member twice, and members whose inputs differ."""
  if len(runs) < 2:
    raise RunError('an ensemble needs at least two members')
  splits = [read_split(run.directory) for run in runs]
  first, reference = splits[0], _inputs(runs[0])
  seen = {}
  for run, split in zip(runs, splits):
    if split.get('member') is None or 'seed_test' not in split:
      raise RunError(f'{run.directory}: is not an ensemble member (train it with --member K: its split.json has no '
                     'member and seed_test)')
    differs = [key for key in SAME_SPLIT if split.get(key) != first.get(key)]
    if differs:
      raise RunError(f'{run.directory}: its split.json differs from {runs[0].directory} in {", ".join(differs)}; '
                     'the members of an ensemble are trained on one seed\'s split of the same data')
    if split['member'] in seen:
      raise RunError(f'{run.directory}: is member {split["member"]}, as {seen[split["member"]]} is already')
    seen[split['member']] = run.directory
    inputs = _inputs(run)
    if inputs != reference:
      changed = ', '.join(f'{k} {inputs[k]} (not {reference[k]})' for k in inputs if inputs[k] != reference[k])
      raise RunError(f'{run.directory}: takes other inputs than {runs[0].directory}: {changed}')
  training = sorted({p for split in splits for side in ('train', 'validation') for p in split[side]})
  return {'kind': 'patient', 'seed': first['seed'], 'fold': None, 'data_fingerprint': first['data_fingerprint'],
          'train': training, 'validation': first['test'], 'test': first['seed_test'],
          'note': f'ensemble of {len(runs)} members: validation is the decision set (the seed\'s validation patients, '
                  'which no member trained or selected on; every choice of the ensemble is made there); test is the '
                  'seed\'s test patients, read by no step of the ensemble'}


def _copy_member(run: LoadedRun, to: RunDir) -> None:
  """`run`'s files and its selected weights (the variables its figures were measured with, no
  optimizer state) as a run folder of their own."""
  source = RunDir(run.directory)
  to.path.mkdir(parents=True)
  for name in MEMBER_FILES:
    if getattr(source, name).is_file():
      shutil.copy2(getattr(source, name), getattr(to, name))
  checkpoint = source.checkpoint_name(run.checkpoint)
  write_decision(to, read_decision(run.directory).with_checkpoint(checkpoint))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(RunDir.checkpoint_state(to.checkpoint(checkpoint)).resolve(), run.variables)
  checkpointer.wait_until_finished()


def _figures(scorer: Scorer, images: np.ndarray, truth: np.ndarray, patients: np.ndarray) -> dict:
  """A scorer's figures on slices with their true masks: slice detection from its labels (ROC AUC
  from its probabilities), for a segmenter the metrics of its masks, and for an ensemble whether
  its members' disagreement marks its wrong labels (`disagreement_roc_auc_for_errors`: the ROC AUC
  of the members' spread as a score for "this label is wrong"; NaN when no label is wrong)."""
  scores = scorer.score(images, patients)
  labels = truth.reshape(len(truth), -1).any(axis=1)
  figures = decision_metrics(labels, scores.label, scores.probability)
  figures.pop('confusion_matrix', None)
  if scores.mask is not None:
    figures.update(segmentation_metrics(scores.mask, truth, patients))
  if scores.spread is not None:
    wrong = scores.label != labels
    figures['disagreement_roc_auc_for_errors'] = roc_auc(wrong, scores.spread) if wrong.any() else float('nan')
    figures['wrong_labels'] = int(wrong.sum())
  return {k: float(v) for k, v in figures.items()}


def make_ensemble(run_dirs: Sequence[str | Path], out_dir: str | Path, data_dir: str | Path,
                  batch_size: int = INFERENCE.batch_size) -> dict:
  """Writes the ensemble of `run_dirs` to `out_dir` (new or empty; written under a temporary name
  and renamed, so an interruption leaves nothing half-made) with its decisions chosen on the
  decision set read from `data_dir`; returns what `decision_set.json` holds."""
  out_dir = Path(out_dir)
  if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
    raise OutputExistsError(f'{out_dir}: exists and is not an empty folder; choose a new --out')
  task = read_config(Path(run_dirs[0]))[0].task.name
  runs = [load_run(run_dir, task) for run_dir in run_dirs]
  split = check_members(runs)
  check_data(data_dir, runs[0].directory)
  images, truth, patients = patients_slices(Path(data_dir), split['validation'], 'decision set')
  with staged_folder(out_dir) as staging:
    folder = RunDir(staging)
    names = [f'{folder.members.name}/{k}' for k in range(len(runs))]
    for run, name in zip(runs, names):
      _copy_member(run, RunDir(staging / name))
    write_json(folder.split, split)
    write_json(folder.ensemble, {'task': task, 'members': names, 'sources': [str(Path(d).resolve()) for d in run_dirs],
                                 'averaged': 'probabilities (a segmenter\'s pixel probabilities, before post-processing)'})
    write_decision(folder, _decide(folder, task, images, truth, patients, batch_size))
    figures = {'patients': len(split['validation']), 'slices': len(images),
               'ensemble': _figures(_scorer(folder.path, task, batch_size), images, truth, patients),
               'members': {name: _figures(_scorer(staging / name, task, batch_size), images, truth, patients)
                           for name in names}}
    write_json(folder.decision_set, figures)
  return figures


def _scorer(path: Path, task: str, batch_size: int) -> Scorer:
  return Scorer(path, None, batch_size) if task == 'classify' else Scorer(None, path, batch_size)


def _decide(folder: RunDir, task: str, images: np.ndarray, truth: np.ndarray, patients: np.ndarray,
            batch_size: int) -> Decision:
  """The ensemble's decisions, chosen on the decision set with the ensemble itself."""
  chosen_on = f'the decision set ({len(np.unique(patients))} patients: the seed\'s validation patients)'
  if task == 'classify':
    return Decision(threshold_chosen_on='fixed default, as a single classifier\'s')
  scorer = _scorer(folder.path, task, batch_size)
  probabilities = {flip: scorer.pixel_probability(images, patients, flip) for flip in (False, True)}
  rule, tried = choose_rule(probabilities, truth, patients)
  write_csv(folder.mask_rules, tried)
  return Decision.by_mask_rule(rule, f'{chosen_on}: mean per-volume Dice at 256x256 of the ensemble\'s masks, of the '
                                     'rules in mask_rules.csv')


def format_table(figures: dict) -> str:
  """The decision set's figures: the ensemble beside each member."""
  keys = [k for k in ('roc_auc', 'accuracy', 'sensitivity', 'specificity', 'dice_per_volume', 'false_positive_rate')
          if k in figures['ensemble']]
  rows = [('ensemble', figures['ensemble'])] + list(figures['members'].items())
  lines = [f'decision set: {figures["patients"]} patients, {figures["slices"]} slices',
           f'{"":12s}' + ''.join(f'{k:>22s}' for k in keys)]
  lines += [f'{name:12s}' + ''.join(f'{values[k]:22.3f}' for k in keys) for name, values in rows]
  return '\n'.join(lines)
