"""How far a resumed run is from the uninterrupted one: exact on a CPU, the figure to state on a GPU.

  python bench/resume_gap.py --data-dir ../shared/data/lgg/kaggle_3m [--image-size 64] --out bench/results

exp20's recipe (constant learning rate) trains 2 epochs straight, and 1 epoch then `--resume` to
2, each in a process of its own (as a real resume is); the two final states are compared: the
largest absolute difference of any weight and that over the largest weight. On a GPU the pair
runs twice, with XLA's defaults and with `--xla_gpu_deterministic_ops=true
--xla_gpu_autotune_level=0`, with the seconds of each, so the gap and the cost of closing it are
measured together. The last line printed is one JSON object (also OUT/resume_gap.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DETERMINISTIC = '--xla_gpu_deterministic_ops=true --xla_gpu_autotune_level=0'


def final_state(run_dir: Path) -> dict[str, np.ndarray]:
  """Every array of a run's newest 'last' checkpoint, by its tree path."""
  import jax
  import orbax.checkpoint as ocp

  last = run_dir / 'checkpoints' / 'last'
  step = max(int(p.name) for p in last.iterdir() if p.name.isdigit())
  restored = ocp.StandardCheckpointer().restore((last / str(step) / 'state').resolve())
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(restored)}


def gap(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict:
  """The largest absolute difference between two states' floating arrays, and relative to the largest value."""
  floating = [name for name in a if np.issubdtype(a[name].dtype, np.floating)]
  largest = max(float(np.abs(a[n].astype(np.float64)).max()) for n in floating)
  difference = max(float(np.abs(a[n].astype(np.float64) - b[n].astype(np.float64)).max()) for n in floating)
  return {'max_abs_difference': difference, 'relative_to_largest_weight': difference / largest,
          'identical': all(np.array_equal(a[n], b[n]) for n in a)}


def pair(data_dir: str, workdir: Path, image_size: int, xla_flags: str | None) -> dict:
  """The straight and the resumed run in `workdir`; their gap and the seconds of all three processes."""
  env = dict(os.environ)
  if xla_flags:
    env['XLA_FLAGS'] = ' '.join(filter(None, [env.get('XLA_FLAGS'), xla_flags]))
  base = [sys.executable, '-m', 'experiments.exp20', '--data-dir', data_dir, '--workdir', str(workdir), '--init',
          'scratch', '--image-size', str(image_size), '--bootstrap-samples', '0', '--no-progress']
  began = time.perf_counter()
  for flags in (['--epochs', '2', '--run-name', 'straight'], ['--epochs', '1', '--run-name', 'resumed'],
                ['--epochs', '2', '--run-name', 'resumed', '--resume']):
    subprocess.run([*base, *flags], cwd=ROOT, env=env, check=True, capture_output=True)
  seconds = time.perf_counter() - began
  runs = workdir / 'exp20'
  return {**gap(final_state(runs / 'straight'), final_state(runs / 'resumed')), 'seconds': round(seconds, 1)}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python bench/resume_gap.py', description=__doc__.splitlines()[0])
  parser.add_argument('--data-dir', required=True, help='a kaggle_3m folder')
  parser.add_argument('--image-size', type=int, default=64)
  parser.add_argument('--out', default='bench/results', help='folder for resume_gap.json')
  args = parser.parse_args(argv)
  # asked in a process of its own: JAX here would hold most of the GPU's memory while the runs train
  platform, device = subprocess.run(
      [sys.executable, '-c', 'import jax; print(jax.default_backend()); print(jax.devices()[0].device_kind)'],
      check=True, capture_output=True, text=True).stdout.split('\n')[:2]
  settings = {'xla_defaults': None, **({'deterministic_ops': DETERMINISTIC} if platform == 'gpu' else {})}
  result = {'device': device, 'platform': platform, 'image_size': args.image_size}
  with tempfile.TemporaryDirectory(prefix='jaxbrain-resume-gap-') as scratch:
    for name, flags in settings.items():
      result[name] = pair(str(Path(args.data_dir).resolve()), Path(scratch) / name, args.image_size, flags)
      print(f'{name}: {result[name]}', flush=True)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'resume_gap.json').write_text(json.dumps(result, indent=2) + '\n', encoding='utf-8')
  print(json.dumps(result))


if __name__ == '__main__':
  main()
