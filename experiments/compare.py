"""Two runs' (or two predictions') test slices side by side: each one's metrics and the paired
patient-bootstrap interval of their difference.

  python -m experiments.compare A B [--truth KAGGLE_DIR] [--samples 1000] [--out compare.json]

A and B are run folders (or their `test_predictions.csv`) scored on the same test slices, such as
`bench/torch_baseline.py`'s output and a jaxbrain run with the same split seed, or `jaxbrain
predict` output folders on the same slices scored against the true masks of `--truth` (an
ensemble and its best member, say); anything else (other slices, other truths) is refused.
Accuracy and balanced accuracy are those of each side's `label` column (its decisions as it made
them), ROC AUC that of its `probability`; with masks on both sides (`predict --seg-run`), also the
mean per-volume Dice. Prints a Markdown table, then one JSON object.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from jaxbrain.errors import UserError
from jaxbrain.files import write_json
from jaxbrain.folders import RUN_FILES, PredictionDir, RunDir
from jaxbrain.flags import INFERENCE
from jaxbrain.metrics import decision_metrics, paired_difference

KEYS = ('accuracy', 'balanced_accuracy', 'roc_auc')
DICE = 'dice_per_volume'


class CompareError(UserError, ValueError):
  """Two prediction files that do not describe the same test slices."""


def _read_test_predictions(path: Path) -> dict[str, dict]:
  name = RUN_FILES['test_predictions']
  path = RunDir(path).test_predictions if path.is_dir() else path
  if not path.is_file():
    raise CompareError(f'{path}: not found (a run folder holds {name} once its run finished)')
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  missing = {'path', 'patient', 'probability', 'label', 'truth'} - set(rows[0] if rows else ())
  if missing:
    raise CompareError(f'{path}: not a {name} (no column {", ".join(sorted(missing))})')
  return {row['path']: {'patient': row['patient'], 'truth': int(row['truth']), 'probability': float(row['probability']),
                        'label': int(row['label'])} for row in rows}


def _read_prediction_dir(path: Path, truth_dir: str | Path | None) -> dict[str, dict]:
  from jaxbrain.localize.evaluate import score_slices

  if truth_dir is None:
    raise CompareError(f'{path}: a `jaxbrain predict` output; give --truth KAGGLE_DIR to score it')
  scored = score_slices(path, truth_dir)
  volume_dice = scored.volume_dice() if scored.masks is not None else {}
  return {row['path']: {'patient': row['patient'], 'truth': int(scored.labels[i]),
                        'probability': float(scored.probabilities[i]), 'label': int(scored.decisions[i]),
                        **({DICE: volume_dice[row['patient']]} if volume_dice else {})}
          for i, row in enumerate(scored.rows)}


def read_predictions(path: str | Path, truth_dir: str | Path | None = None) -> dict[str, dict]:
  """{slice path: {'patient', 'truth', 'probability', 'label'[, 'dice_per_volume']}} of a run's
  test_predictions.csv (the file or its run folder) or of a `jaxbrain predict` folder scored
  against `truth_dir` (with masks: each row carries its patient's volume Dice)."""
  path = Path(path)
  if PredictionDir(path).predictions.is_file():
    return _read_prediction_dir(path, truth_dir)
  return _read_test_predictions(path)


def _side(rows: list[dict], with_dice: bool):
  """A side's metrics on resampled rows (the `metrics.bootstrap_by_patient` signature)."""
  labels = np.array([r['truth'] for r in rows])
  decisions, scores = np.array([r['label'] for r in rows]), np.array([r['probability'] for r in rows])
  dice = np.array([r.get(DICE, np.nan) for r in rows])

  def metric(indices, groups):
    result = decision_metrics(labels[indices], decisions[indices], scores[indices])
    result = {k: result[k] for k in KEYS}
    if with_dice:  # a patient drawn twice counts as two volumes
      first = np.unique(np.asarray(groups), return_index=True)[1]
      result[DICE] = float(dice[indices[first]].mean())
    return result
  return metric


def compare(path_a: str | Path, path_b: str | Path, samples: int = INFERENCE.bootstrap_samples, seed: int = 0,
            truth_dir: str | Path | None = None) -> dict:
  """Metrics of A and B on their common test slices, and B - A with its paired interval."""
  a, b = read_predictions(path_a, truth_dir), read_predictions(path_b, truth_dir)
  if a.keys() != b.keys():
    raise CompareError(f'{path_a} and {path_b} score different slices ({len(a.keys() ^ b.keys())} not in both): '
                       'compare runs of the same split (same data, --split, --fold and --seed)')
  order = sorted(a)
  if any(a[k]['truth'] != b[k]['truth'] or a[k]['patient'] != b[k]['patient'] for k in order):
    raise CompareError(f'{path_a} and {path_b} disagree on a slice\'s truth or patient: not the same data')
  with_dice = all(DICE in side[order[0]] for side in (a, b))
  metric_a, metric_b = (_side([side[k] for k in order], with_dice) for side in (a, b))
  patients = np.array([a[k]['patient'] for k in order])
  everything = np.arange(len(order))
  return {'a': str(path_a), 'b': str(path_b), 'slices': len(order), 'patients': len(set(patients)),
          'metrics_a': metric_a(everything, patients), 'metrics_b': metric_b(everything, patients),
          'b_minus_a': paired_difference(metric_a, metric_b, patients, samples, seed)}


def table(result: dict) -> str:
  interval = result['b_minus_a'].get('confidence_95') or {}
  lines = [f'{result["slices"]} test slices of {result["patients"]} patients; A = {result["a"]}, B = {result["b"]}',
           '', '| metric | A | B | B - A [95% paired patient-bootstrap CI] |', '|---|---|---|---|']
  for k in result['metrics_a']:
    low_high = f' [{interval[k][0]:+.3f}, {interval[k][1]:+.3f}]' if k in interval else ''
    lines.append(f'| {k} | {result["metrics_a"][k]:.3f} | {result["metrics_b"][k]:.3f} | '
                 f'{result["b_minus_a"]["difference"][k]:+.3f}{low_high} |')
  return '\n'.join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m experiments.compare', description=__doc__.splitlines()[0])
  parser.add_argument('run_a', help='run folder, test_predictions.csv or predict folder (the reference)')
  parser.add_argument('run_b', help='run folder, test_predictions.csv or predict folder (the one measured against A)')
  parser.add_argument('--truth', help='kaggle_3m tree with the true masks, for predict folders')
  parser.add_argument('--samples', type=int, default=INFERENCE.bootstrap_samples,
                      help='patient bootstrap resamples (default %(default)s)')
  parser.add_argument('--out', help='also write the JSON object to this file')
  args = parser.parse_args(argv)
  try:
    result = compare(args.run_a, args.run_b, args.samples, truth_dir=args.truth)
  except UserError as e:
    parser.exit(2, f'error: {e}\n')
  print(table(result))
  print(json.dumps(result))
  if args.out:
    write_json(Path(args.out), result)


if __name__ == '__main__':
  main()
