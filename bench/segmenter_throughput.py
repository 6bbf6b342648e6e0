"""How fast one member of a segmentation bundle runs on this CPU, in floating-point operations per
second, under jaxbrain's XLA defaults and under XLA's own: is `predict` bound by arithmetic?

  python bench/segmenter_throughput.py [--model checkpoints/models/lgg-seg01] [--slices 16] --out R

Each setting runs in a fresh process (XLA reads its flags when it creates the CPU client): one
member's pixel probabilities of `--slices` random uint8 slices, flip-averaged as the shipped
model's mask rule asks, compiled once and then timed `--repeats` times. XLA's cost analysis gives
the operations of one pass (one slice, no mirror image); the rate is passes times operations over
the best warm time, beside that of a 2048 x 2048 float32 matrix product (a practical ceiling of
this CPU). The ratio of the two settings is measured side by side in one run. The last
line printed is one JSON object, also written to R/segmenter_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {'jaxbrain': 'jaxbrain\'s XLA defaults (jaxbrain.xla_defaults)',
            'xla': 'XLA\'s own (JAXBRAIN_XLA_DEFAULTS=0: convolutions fused into YNNPACK calls)'}


def child(model: str, slices: int, repeats: int) -> dict:
  """One setting, in this process: operations per pass and the warm times."""
  from jaxbrain import configure_cpu
  configure_cpu()
  import jax
  import numpy as np

  from jaxbrain.bundle import load
  from jaxbrain.data.arrays import segmenter_inputs
  from jaxbrain.inference import native_pixel_probability

  run = load(model, 'segment')
  member = (run.members or (run,))[0]
  task, flip = run.config.task, run.mask_rule.flip_average
  images = np.random.default_rng(0).integers(0, 256, (slices, 256, 256, 3), dtype=np.uint8)
  inputs = segmenter_inputs(images, np.zeros(slices, int), task.context_slices, task.scale_volumes)
  step = jax.jit(lambda variables, batch, flip: native_pixel_probability(member.model, variables, member.preprocessing,
                                                                          batch, flip), static_argnums=2)
  cost = step.lower(member.variables, inputs, False).compile().cost_analysis()
  flops = (cost[0] if isinstance(cost, list) else cost)['flops'] / slices
  output, times = warm_times(lambda: step(member.variables, inputs, flip), repeats)
  passes = slices * (2 if flip else 1)
  return {'matmul_gflop_per_s': matmul_rate(repeats), 'gflop_per_pass': flops / 1e9, 'passes': passes, 'warm_s': times,
          'ms_per_pass': 1000 * min(times) / passes, 'gflop_per_s': passes * flops / 1e9 / min(times),
          'checksum': float(np.asarray(output, np.float64).sum())}


def matmul_rate(repeats: int, n: int = 2048) -> float:
  """GFLOP/s of an n x n float32 matrix product, best of `repeats` warm runs."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (n, n))
  product = jax.jit(jnp.matmul)
  return 2 * n ** 3 / 1e9 / min(warm_times(lambda: product(a, a), repeats)[1])


def warm_times(call, repeats: int) -> tuple:
  """(the last output, the seconds of each of `repeats` calls of `call`) after one untimed call."""
  output = call().block_until_ready()
  times = []
  for _ in range(repeats):
    started = time.perf_counter()
    output = call().block_until_ready()
    times.append(time.perf_counter() - started)
  return output, times


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default=str(ROOT / 'checkpoints' / 'models' / 'lgg-seg01'))
  parser.add_argument('--slices', type=int, default=16)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--out', default='bench_segmenter_throughput')
  parser.add_argument('--child', choices=SETTINGS, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.model, args.slices, args.repeats)))
    return
  from jaxbrain import machine

  found = {}
  for setting in SETTINGS:
    env = {**os.environ, 'JAXBRAIN_XLA_DEFAULTS': '1' if setting == 'jaxbrain' else '0'}
    done = subprocess.run([sys.executable, __file__, '--child', setting, '--model', args.model, '--slices',
                           str(args.slices), '--repeats', str(args.repeats)], env=env, capture_output=True, text=True,
                          check=True)
    found[setting] = {'said': SETTINGS[setting], **json.loads(done.stdout.strip().splitlines()[-1])}
  result = {'machine': machine.describe(), 'model': args.model, 'settings': found,
            'xla_over_jaxbrain_time': found['xla']['ms_per_pass'] / found['jaxbrain']['ms_per_pass']}
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'segmenter_throughput.json').write_text(json.dumps(result, indent=1))
  for setting, r in found.items():
    print(f'{r["said"]}: {r["gflop_per_pass"]:.2f} GFLOP a pass, {r["ms_per_pass"]:.1f} ms a pass, '
          f'{r["gflop_per_s"]:.0f} GFLOP/s (a float32 matrix product: {r["matmul_gflop_per_s"]:.0f} GFLOP/s)')
  print(json.dumps(result))


if __name__ == '__main__':
  main()
