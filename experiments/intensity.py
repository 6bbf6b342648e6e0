"""Each patient's intensity scale: the 99th percentile of every channel (pre-contrast, FLAIR,
post-contrast) over the head's pixels (non-zero), dimmest scans first, with the median over patients.
`python -m experiments.intensity --data-dir ../shared/data/lgg/kaggle_3m`."""
from __future__ import annotations

import argparse

import numpy as np

from jaxbrain.data import kaggle3m
from jaxbrain.data.arrays import head_percentiles
from jaxbrain.data.kaggle3m import CHANNELS
from jaxbrain.data.kaggle3m import slice_identity
from jaxbrain.data.inputs import collect_inputs


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-dir', required=True)
  args = parser.parse_args(argv)
  by_patient: dict[str, list] = {}
  for path in collect_inputs([args.data_dir]):
    by_patient.setdefault(slice_identity(path)[0], []).append(path)
  rows = {patient: head_percentiles(np.stack(kaggle3m.map_slices(kaggle3m.read_image, paths)))
          for patient, paths in sorted(by_patient.items())}
  print('| patient | ' + ' | '.join(CHANNELS) + ' |\n|---|' + '---|' * len(CHANNELS))
  for patient, values in sorted(rows.items(), key=lambda item: np.nanmean(item[1])):
    print(f'| {patient} | ' + ' | '.join(f'{v:.0f}' for v in values) + ' |')
  print('| median | ' + ' | '.join(f'{v:.0f}' for v in np.nanmedian(list(rows.values()), axis=0)) + ' |')


if __name__ == '__main__':
  main()
