"""Classification runs with a mask head, each one's selected checkpoint scored three ways on its
own validation and test patients: the classifier's probability, its arithmetic mean with the mask
head's most likely cell, and their geometric mean (what `--score-with-mask-head` computes). How
exp21's score was chosen: experiments/README.md, "Scoring slices with both heads".

  python -m experiments.scores RUN... --data-dir ../shared/data/lgg/kaggle_3m

Prints a Markdown table (ROC AUC on validation and test, test accuracy; one row per run and their
mean), then one JSON object. Slices are scored without flip averaging.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from jaxbrain.data.transforms import apply_preprocessing
from jaxbrain.errors import UserError
from jaxbrain.localize.gate import patients_slices
from jaxbrain.metrics import classification_metrics
from jaxbrain.runs import LoadedRun, RunError, load_run, read_split

SCORES = ('classifier', 'arithmetic', 'geometric')


def three_scores(run: LoadedRun, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
  """{score: tumor probability [N]} of uint8 slices [N, 256, 256, 3]; the classifier's and the
  geometric mean come from `ResNet.probability`, as training and predict compute them."""

  @jax.jit
  def scored(batch):
    x, _ = apply_preprocessing(run.preprocessing, None, batch)
    _, cells = run.model.apply(run.variables, x, with_mask=True)
    return (run.model.apply(run.variables, x, method='probability'), jax.nn.sigmoid(cells.max(axis=(1, 2))),
            run.model.apply(run.variables, x, False, True, method='probability'))

  parts = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    padded = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - len(chunk), 0)])
    parts.append([np.asarray(p)[:len(chunk)] for p in scored(padded)])
  classifier, cell, geometric = (np.concatenate(p) for p in zip(*parts))
  return {'classifier': classifier, 'arithmetic': (classifier + cell) / 2, 'geometric': geometric}


def measure(run_dir: Path, data_dir: Path) -> dict:
  """{'validation' | 'test': {score: {'roc_auc', 'accuracy'}}} of one run."""
  run = load_run(run_dir, 'classify')
  if not run.config.model.mask_head:
    raise RunError(f'{run_dir}: has no mask head to score with')
  split, result = read_split(run_dir), {}
  for part in ('validation', 'test'):
    images, truth, _ = patients_slices(data_dir, split[part], part)
    labels = truth.any(axis=(1, 2)).astype(int)
    result[part] = {name: {k: classification_metrics(labels, p)[k] for k in ('roc_auc', 'accuracy')}
                    for name, p in three_scores(run, images).items()}
  return result


def mean_of(results: list[dict]) -> dict:
  """The per-run figures averaged over runs (the 5-fold mean)."""
  return {part: {score: {key: float(np.mean([r[part][score][key] for r in results])) for key in values}
                 for score, values in scores.items()} for part, scores in results[0].items()}


def table(results: dict[str, dict]) -> str:
  rows = ['| run | validation ROC AUC: classifier / arithmetic / geometric | test ROC AUC: classifier / arithmetic / '
          'geometric | test accuracy: classifier / geometric |', '|---|---|---|---|']
  for name, r in {**results, 'mean': mean_of(list(results.values()))}.items():
    shown = lambda part, key, scores=SCORES: ' / '.join(f'{r[part][s][key]:.3f}' for s in scores)  # noqa: E731
    rows.append(f'| {name} | {shown("validation", "roc_auc")} | {shown("test", "roc_auc")} | '
                f'{shown("test", "accuracy", ("classifier", "geometric"))} |')
  return '\n'.join(rows)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m experiments.scores', description=__doc__.splitlines()[0])
  parser.add_argument('runs', nargs='+', type=Path, help='classification run folders (with --mask-head)')
  parser.add_argument('--data-dir', required=True, type=Path, help='the kaggle_3m folder the runs trained on')
  args = parser.parse_args(argv)
  try:
    results = {str(run_dir): measure(run_dir, args.data_dir) for run_dir in args.runs}
  except UserError as e:
    parser.exit(2, f'error: {e}\n')
  print(table(results))
  print(json.dumps(results))


if __name__ == '__main__':
  main()
