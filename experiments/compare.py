"""Two runs' test predictions side by side: each one's metrics and the paired patient-bootstrap
interval of their difference.

  python -m experiments.compare RUN_A RUN_B [--samples 1000] [--out compare.json]

RUN_A and RUN_B are run folders (or their `test_predictions.csv`) scored on the same test slices,
such as `bench/torch_baseline.py`'s output and a jaxbrain run with the same split seed; anything
else (another split, other slices, other truths) is refused. Prints a Markdown table, then one
JSON object.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from jaxbrain.errors import UserError
from jaxbrain.files import write_json
from jaxbrain.metrics import BOOTSTRAP_SAMPLES, classification_metrics, paired_difference

KEYS = ('accuracy', 'balanced_accuracy', 'roc_auc')


class CompareError(UserError, ValueError):
  """Two prediction files that do not describe the same test slices."""


def read_predictions(path: str | Path) -> dict[str, dict]:
  """{slice path: row} of a run's test_predictions.csv (given the file or its run folder)."""
  path = Path(path)
  path = path / 'test_predictions.csv' if path.is_dir() else path
  if not path.is_file():
    raise CompareError(f'{path}: not found (a run folder holds test_predictions.csv once its run finished)')
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  missing = {'path', 'patient', 'probability', 'truth'} - set(rows[0] if rows else ())
  if missing:
    raise CompareError(f'{path}: not a test_predictions.csv (no column {", ".join(sorted(missing))})')
  return {row['path']: row for row in rows}


def compare(path_a: str | Path, path_b: str | Path, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
  """Metrics of A and B on their common test slices, and B - A with its paired interval."""
  a, b = read_predictions(path_a), read_predictions(path_b)
  if a.keys() != b.keys():
    raise CompareError(f'{path_a} and {path_b} score different slices ({len(a.keys() ^ b.keys())} not in both): '
                       'compare runs of the same split (same data, --split, --fold and --seed)')
  order = sorted(a)
  if any(a[k]['truth'] != b[k]['truth'] or a[k]['patient'] != b[k]['patient'] for k in order):
    raise CompareError(f'{path_a} and {path_b} disagree on a slice\'s truth or patient: not the same data')
  labels = np.array([int(a[k]['truth']) for k in order])
  probabilities = [np.array([float(run[k]['probability']) for k in order]) for run in (a, b)]
  patients = np.array([a[k]['patient'] for k in order])
  metrics = [classification_metrics(labels, p) for p in probabilities]
  return {'a': str(path_a), 'b': str(path_b), 'slices': len(order), 'patients': len(set(patients)),
          'metrics_a': {k: metrics[0][k] for k in KEYS}, 'metrics_b': {k: metrics[1][k] for k in KEYS},
          'b_minus_a': paired_difference(labels, *probabilities, patients, samples, seed)}


def table(result: dict) -> str:
  interval = result['b_minus_a'].get('confidence_95') or {}
  lines = [f'{result["slices"]} test slices of {result["patients"]} patients; A = {result["a"]}, B = {result["b"]}',
           '', '| metric | A | B | B - A [95% paired patient-bootstrap CI] |', '|---|---|---|---|']
  for k in KEYS:
    low_high = f' [{interval[k][0]:+.3f}, {interval[k][1]:+.3f}]' if k in interval else ''
    lines.append(f'| {k} | {result["metrics_a"][k]:.3f} | {result["metrics_b"][k]:.3f} | '
                 f'{result["b_minus_a"]["difference"][k]:+.3f}{low_high} |')
  return '\n'.join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m experiments.compare', description=__doc__.splitlines()[0])
  parser.add_argument('run_a', help='run folder or test_predictions.csv (the reference)')
  parser.add_argument('run_b', help='run folder or test_predictions.csv (the one measured against A)')
  parser.add_argument('--samples', type=int, default=BOOTSTRAP_SAMPLES,
                      help='patient bootstrap resamples (default %(default)s)')
  parser.add_argument('--out', help='also write the JSON object to this file')
  args = parser.parse_args(argv)
  try:
    result = compare(args.run_a, args.run_b, args.samples)
  except UserError as e:
    parser.exit(2, f'error: {e}\n')
  print(table(result))
  print(json.dumps(result))
  if args.out:
    write_json(Path(args.out), result)


if __name__ == '__main__':
  main()
