"""Where a ResNet18 training step's time goes: each convolution shape alone, jaxbrain (XLA) vs PyTorch.

  python bench/conv_layers.py [--batch 8]

For every distinct convolution of ResNet18 at 224x224 it times the forward pass, the input
gradient (dX) and the weight gradient (dW), each framework in its own process with jaxbrain's
XLA defaults applied. Summing the table over the network's layers and comparing with
`bench/run.py`'s whole step separates the convolution kernels from everything around them.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (input size, in channels, out channels, kernel, stride, how many times ResNet18 has it)
SHAPES = ((224, 3, 64, 7, 2, 1), (56, 64, 64, 3, 1, 4), (56, 64, 128, 3, 2, 1), (56, 64, 128, 1, 2, 1),
          (28, 128, 128, 3, 1, 3), (28, 128, 256, 3, 2, 1), (28, 128, 256, 1, 2, 1), (14, 256, 256, 3, 1, 3),
          (14, 256, 512, 3, 2, 1), (14, 256, 512, 1, 2, 1), (7, 512, 512, 3, 1, 3))


def _median_ms(fn, repeats: int = 7) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1e3


def jax_worker(batch: int) -> list[list[float]]:
  sys.path.insert(0, str(ROOT))
  import jaxbrain
  jaxbrain.configure_cpu()  # before the CPU client starts, as jaxbrain's programs do
  import jax
  import jax.numpy as jnp

  from jaxbrain.models.layers import conv_general_dilated

  rows = []
  for size, cin, cout, k, stride, _ in SHAPES:
    x = jax.random.normal(jax.random.key(0), (batch, size, size, cin))
    w = jax.random.normal(jax.random.key(1), (k, k, cin, cout))
    # jaxbrain's convolution (lax's, with its own input gradient on small maps), as the ResNet calls it
    conv = lambda x, w: conv_general_dilated(x, w, (stride, stride), ((k // 2, k // 2),) * 2,
                                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    g = jnp.ones_like(conv(x, w))
    forward = jax.jit(conv)
    dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
    dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
    rows.append([_median_ms(lambda: forward(x, w).block_until_ready()),
                 _median_ms(lambda: dx(x, w, g).block_until_ready()),
                 _median_ms(lambda: dw(x, w, g).block_until_ready())])
  return rows


def torch_worker(batch: int) -> list[list[float]]:
  import torch

  torch.set_num_threads(os.cpu_count())
  rows = []
  for size, cin, cout, k, stride, _ in SHAPES:
    x, w = torch.rand(batch, cin, size, size), torch.rand(cout, cin, k, k)
    g = torch.ones_like(torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2))
    rows.append([_median_ms(lambda: torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2)),
                 _median_ms(lambda: torch.nn.grad.conv2d_input(x.shape, w, g, stride=stride, padding=k // 2)),
                 _median_ms(lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, stride=stride, padding=k // 2))])
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--worker', choices=('jax', 'torch'), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps((jax_worker if args.worker == 'jax' else torch_worker)(args.batch)))
    return
  results = {}
  for framework in ('jax', 'torch'):
    out = subprocess.run([sys.executable, __file__, '--worker', framework, '--batch', str(args.batch)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    results[framework] = json.loads(out.stdout.strip().splitlines()[-1])
  print(f'batch {args.batch}; ms per call, jaxbrain / PyTorch (ratio of times: > 1 means jaxbrain is slower)')
  print('| conv (input, in->out, kernel, stride) x count | forward | dX | dW |\n|---|---|---|---|')
  totals = {'jax': [0.0] * 3, 'torch': [0.0] * 3}
  for (size, cin, cout, k, stride, count), ours, theirs in zip(SHAPES, results['jax'], results['torch']):
    cells = ' | '.join(f'{a:.1f} / {b:.1f} ({a / b:.2f})' for a, b in zip(ours, theirs))
    print(f'| {size}px {cin}->{cout} {k}x{k} s{stride} x{count} | {cells} |')
    for framework, row in (('jax', ours), ('torch', theirs)):
      totals[framework] = [t + count * v for t, v in zip(totals[framework], row)]
  jax_total, torch_total = totals['jax'], totals['torch']
  cells = ' | '.join(f'{a:.0f} / {b:.0f} ({a / b:.2f})' for a, b in zip(jax_total, torch_total))
  print(f'| **ResNet18 total** | {cells} |')
  # conv1's input gradient is never needed in training (the input is data), so the step's sum leaves it out
  step = {f: sum(t) - results[f][0][1] for f, t in totals.items()}
  print(f"convolutions of one training step: jaxbrain {step['jax']:.0f} ms, PyTorch {step['torch']:.0f} ms")
  print(json.dumps({'batch': args.batch, 'shapes': SHAPES, 'ms': results, 'step_convolutions_ms': step}))


if __name__ == '__main__':
  main()
