"""Evaluators: extra measurements and files for a run's test patients, named in the config.

`config.task.evals` lists module names of this package (big_vision's `config.evals`); the runner
imports each by name (it never imports this package itself: evaluators sit above it) after it has
evaluated the selected checkpoint on test, and calls its `evaluate(test, run) -> metrics`: `test`
is a `data.arrays.TestSlices` (the test slices, the outputs on them, a narrow heatmap function),
`run` the run's `folders.RunDir` (None on processes that write nothing). A new evaluator is a new
module here with that function.
"""
from __future__ import annotations

import numpy as np


def evenly(count: int, total: int) -> np.ndarray:
  """Up to `count` evenly spaced positions in range(total)."""
  return np.linspace(0, total - 1, min(count, total)).astype(int) if total else np.zeros(0, int)
