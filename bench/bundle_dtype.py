"""Float16 or float32 weights for a bundle: does storing the parameters as float16 change any label or
mask on the decision set?

  python bench/bundle_dtype.py ENSEMBLE --data-dir DIR --out R

Exports ENSEMBLE twice (`jaxbrain export`, float32 and `--float16`) under R, scores the ensemble's
decision set (the patients of its split's validation side: the test patients are not read) with
each, and compares: labels and masks equal slice for slice and pixel for pixel, and the largest
difference of a slice probability. float16 is chosen only when every label and every mask pixel is
identical; otherwise float32, with what differed. The last line printed is one JSON object, also
written to R/bundle_dtype.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxbrain import machine  # noqa: E402
from jaxbrain.inference import Scorer  # noqa: E402
from jaxbrain.localize.export import export  # noqa: E402
from jaxbrain.localize.gate import patients_slices  # noqa: E402
from jaxbrain.runs import read_split  # noqa: E402


def compare_dtypes(ensemble: Path, data_dir: Path, out: Path) -> dict:
  """Both bundles written under `out`, the decision set scored with each, the verdict."""
  bundles = {dtype: out / dtype for dtype in ('float32', 'float16')}
  for dtype, folder in bundles.items():
    if not (folder / 'model.json').is_file():
      export(ensemble, folder, 'dtype-check', '0', dtype)
  patients = read_split(ensemble)['validation']
  images, _, stacks = patients_slices(data_dir, patients, 'decision set')
  full, half = (Scorer(None, folder).score(images, stacks) for folder in bundles.values())
  labels = int(np.sum(full.label != half.label))
  pixels = int(np.sum(full.mask != half.mask))
  sizes = {dtype: sum(f.stat().st_size for f in (folder / 'weights').iterdir()) for dtype, folder in bundles.items()}
  chosen = 'float16' if labels == 0 and pixels == 0 else 'float32'
  return {'ensemble': str(ensemble), 'decision_set_patients': len(patients), 'slices': int(len(full.label)),
          'labels_differing': labels, 'mask_pixels_differing': pixels,
          'max_probability_difference': float(np.max(np.abs(full.probability - half.probability))),
          'weights_bytes': sizes, 'chosen': chosen, 'machine': machine.describe()}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('ensemble', type=Path)
  parser.add_argument('--data-dir', type=Path, required=True)
  parser.add_argument('--out', type=Path, required=True)
  args = parser.parse_args(argv)
  args.out.mkdir(parents=True, exist_ok=True)
  result = compare_dtypes(args.ensemble, args.data_dir, args.out)
  (args.out / 'bundle_dtype.json').write_text(json.dumps(result, indent=2) + '\n')
  print(json.dumps(result))


if __name__ == '__main__':
  main()
