"""Input-pipeline throughput on real data: decode (files and TFDS), batch, and transform to 224x224.

  python bench/input_pipeline.py [--data-dir ../shared/data/lgg/kaggle_3m] [--slices 512]

Prints a small table and, last, one JSON line with examples/second for each stage.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from jaxbrain import configure_cpu
from jaxbrain.data import Preprocessing, build_dataset, kaggle3m, apply_preprocessing
from jaxbrain.data.batching import eval_batches
from jaxbrain.data.builder import SPLIT, load_arrays

DEFAULT_DATA = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'lgg' / 'kaggle_3m'


def rate(n: int, fn) -> float:
  start = time.perf_counter()
  fn()
  return n / (time.perf_counter() - start)


def main() -> None:
  configure_cpu()  # as jaxbrain's programs do
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-dir', default=str(DEFAULT_DATA))
  parser.add_argument('--tfds-dir', default='checkpoints/tfds-bench')
  parser.add_argument('--slices', type=int, default=512)
  parser.add_argument('--batch-size', type=int, default=32)
  args = parser.parse_args()

  records = kaggle3m.scan(args.data_dir)[:args.slices]
  n = len(records)
  results = {'decode_files': rate(n, lambda: kaggle3m.map_slices(kaggle3m.read_slice, records))}

  source = build_dataset(args.data_dir, args.tfds_dir).as_data_source(split=SPLIT)
  results['decode_tfds'] = rate(n, lambda: [source[i] for i in range(n)])

  data = load_arrays(build_dataset(args.data_dir, args.tfds_dir))
  indices = np.arange(n)
  preprocessing = Preprocessing(size=224, flip=True, normalize=True)
  transform = jax.jit(lambda key, image, mask: apply_preprocessing(preprocessing, key, image, mask, train=True))
  key = jax.random.key(0)
  jax.block_until_ready(transform(key, data.image[:args.batch_size], data.mask[:args.batch_size]))

  def transform_all():
    for batch in eval_batches(data, indices, args.batch_size):
      out = transform(key, batch['image'], batch['mask'])
    jax.block_until_ready(out)

  results['batch_and_transform_224'] = rate(n, transform_all)
  results['end_to_end_tfds'] = 1 / (1 / results['decode_tfds'] + 1 / results['batch_and_transform_224'])
  print(f'{n} slices, batch {args.batch_size}, {jax.device_count()} x {jax.devices()[0].platform}')
  for stage, value in results.items():
    print(f'  {stage:26s} {value:9.1f} examples/s')
  print(json.dumps({k: round(v, 1) for k, v in results.items()}))


if __name__ == '__main__':
  main()
