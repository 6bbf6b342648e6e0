"""Evaluators: extra measurements and files for a run's test patients, named in the config.

`config.task.evals` lists module names of this package (big_vision's `config.evals`); the runner
imports each by name after it has evaluated the selected checkpoint on test, and calls its
`evaluate(task, variables, indices, outputs, out_dir) -> metrics`. `out_dir` is the run directory
(None on processes that write nothing). A new evaluator is a new module here with that function.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import numpy as np

from jaxbrain.errors import ConfigError


def available() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith('_'))


def run(names, task, variables: dict, indices: np.ndarray, outputs: dict, out_dir: Path | None) -> dict:
  """Runs the evaluators `names` in order; their metrics, merged."""
  metrics = {}
  for name in names:
    if name not in available():
      raise ConfigError(f'--evals {name}: no such evaluator; choose from {", ".join(available())}')
    metrics.update(importlib.import_module(f'{__name__}.{name}').evaluate(task, variables, indices, outputs, out_dir))
  return metrics


def evenly(count: int, total: int) -> np.ndarray:
  """Up to `count` evenly spaced positions in range(total)."""
  return np.linspace(0, total - 1, min(count, total)).astype(int) if total else np.zeros(0, int)
