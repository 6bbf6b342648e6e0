"""Scoring a whole archive: `jaxbrain predict` against Spark `local[2]` on the same files.

  python bench/scoring.py --data-dir ../shared/data/lgg/kaggle_3m --run RUN --seg-run RUN

Times both (each in its own process, start-up included) and checks that they agree slice by
slice; the last line is one JSON object with both wall times and the number of disagreements.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> float:
  start = time.perf_counter()
  subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-dir', default=str(ROOT / '..' / 'shared' / 'data' / 'lgg' / 'kaggle_3m'))
  parser.add_argument('--run', required=True)
  parser.add_argument('--seg-run', required=True)
  args = parser.parse_args()
  import pandas as pd

  with tempfile.TemporaryDirectory() as tmp:
    runs = ['--run', args.run, '--seg-run', args.seg_run]
    predict_s = timed([sys.executable, '-m', 'jaxbrain.cli', 'predict', args.data_dir, *runs, '--out', f'{tmp}/predict',
                       '--no-progress'])
    spark_s = timed([sys.executable, '-m', 'jaxbrain.spark', args.data_dir, *runs, '--out', f'{tmp}/scores.parquet',
                     '--master', 'local[2]'])
    with open(f'{tmp}/predict/predictions.csv') as f:
      expected = {str(Path(r['path']).resolve()): r for r in csv.DictReader(f)}
    table = pd.read_parquet(f'{tmp}/scores.parquet')
    differences = 0
    for _, row in table.iterrows():
      want = expected[str(Path(row['path'].replace('file:', '', 1)).resolve())]
      same = (row['label'] == int(want['label']) and row['tumor_pixels'] == int(want['tumor_pixels'])
              and abs(row['probability'] - float(want['probability'])) <= 1e-5)
      differences += not same
  result = {'slices': len(expected), 'spark_rows': len(table), 'errors': int(table['error'].notna().sum()),
            'differences': differences, 'predict_wall_s': round(predict_s, 1), 'spark_local2_wall_s': round(spark_s, 1)}
  print(json.dumps(result))


if __name__ == '__main__':
  main()
