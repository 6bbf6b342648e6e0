"""jaxbrain against PyTorch on this machine: training and inference images/second, side by side.

  python bench/run.py            # ResNet18/50 x batch 8/32, train + inference, feature cache (~15 min on 2 cores)
  python bench/run.py --quick    # ResNet18 training at batch 8 only (< 3 minutes)
  python bench/run.py --compute-dtype bfloat16   # mixed precision on both sides (for GPUs)
  python bench/run.py --torch-compile on          # PyTorch also under torch.compile (default: on a CUDA GPU)

Each measurement runs in its own subprocess (one framework at a time, so neither competes for
cores and peak memory is its own). Both frameworks get the same work: uint8 224x224 images
scaled to [0, 1], forward, cross-entropy, backward and an SGD-momentum update (training), or
a forward pass (inference), on the same architecture (the report's head on a ResNet). Figures
are the median and range over repeats after warm-up; jaxbrain's compile time is reported apart.
The last line printed is one JSON object: per case, both images/second and `ratio` (jaxbrain / PyTorch).
On a GPU both frameworks run there (PyTorch when its CUDA build is installed) and the peak device
memory is reported beside the peak RSS; bfloat16 means jaxbrain's mixed precision (float32 weights
and BatchNorm statistics) against PyTorch's bfloat16 autocast.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


MIN_REPEAT_S = 1.0  # on fast devices, enough steps per repeat that launch and timer jitter stay small


def timed_repeats(run, repeats: int, steps: int, batch: int) -> tuple[list[float], int]:
  """Warms up with two steps (which also size the repeats), then times `repeats` runs of >= `steps` steps."""
  start = time.perf_counter()
  run(2)
  steps = max(steps, math.ceil(MIN_REPEAT_S * 2 / (time.perf_counter() - start)))
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    run(steps)
    rates.append(steps * batch / (time.perf_counter() - start))
  return rates, steps


def jax_worker(arch: str, batch: int, mode: str, repeats: int, steps: int, dtype: str) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxbrain.data import Preprocessing
  from jaxbrain.models import create_model
  from jaxbrain.train.state import create_train_state
  from jaxbrain.train.steps import make_eval_step, make_train_step
  from jaxbrain.train.strategies import make_optimizer

  model = create_model(arch, num_classes=2, head_hidden=(256, 64), dropout_rate=0.25, dtype=jnp.dtype(dtype))
  images = np.random.default_rng(0).integers(0, 255, (batch, 224, 224, 3), dtype=np.uint8)
  labels = np.arange(batch, dtype=np.int32) % 2
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  tx = make_optimizer(variables['params'], 1e-4, 0.5)
  state = create_train_state(variables, tx, 0)
  preprocessing = Preprocessing(224, flip=False, normalize=False)
  batch_data = {'image': jnp.asarray(images), 'label': jnp.asarray(labels)}
  holder = {'state': state}
  if mode == 'train':
    fn = jax.jit(make_train_step(model, tx, preprocessing, frozen_backbone=False), donate_argnums=0)

    def run(n):
      for _ in range(n):
        holder['state'], metrics = fn(holder['state'], batch_data)
      jax.block_until_ready(metrics)
  else:
    fn = jax.jit(make_eval_step(model, preprocessing))

    def run(n):
      for _ in range(n):
        out = fn(holder['state'], batch_data)
      jax.block_until_ready(out)

  start = time.perf_counter()
  run(1)
  compile_s = time.perf_counter() - start
  rates, steps = timed_repeats(run, repeats, steps, batch)
  stats = jax.devices()[0].memory_stats() or {}  # None on CPU
  peak = stats.get('peak_bytes_in_use')
  return {'rates': rates, 'steps': steps, 'compile_s': compile_s, 'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'device': jax.devices()[0].platform, 'device_peak_mb': peak / 2 ** 20 if peak else None}


def torch_report_model(arch: str):
  """The PyTorch twin of jaxbrain's report model: torchvision's ResNet with the report's head
  (Linear-ReLU-Dropout-Linear-Dropout-Linear, hidden 256 and 64, dropout 0.25)."""
  from torch import nn

  sys.path.insert(0, str(ROOT))
  from tests.models.torch_reference import BasicBlock, Bottleneck, ResNet

  block, layers = (BasicBlock, [2, 2, 2, 2]) if arch == 'resnet18' else (Bottleneck, [3, 4, 6, 3])
  model = ResNet(block, layers)
  model.fc = nn.Sequential(nn.Linear(model.fc.in_features, 256), nn.ReLU(), nn.Dropout(0.25), nn.Linear(256, 64),
                           nn.Dropout(0.25), nn.Linear(64, 2))
  return model


def torch_compiled(model, example, optimizer=None):
  """(`model` under torch.compile, None), compiled here by one call on `example` (with a backward
  pass when an `optimizer` is given: a training step), or (None, why) where this machine cannot
  compile it (no C compiler, an unsupported backend)."""
  import torch

  compiled = torch.compile(model)
  try:  # torch.compile compiles at the first call: fail here, said, rather than in the timed loop
    out = compiled(example)
    if optimizer is not None:
      out.float().sum().backward()
      optimizer.zero_grad(set_to_none=True)
  except Exception as e:  # noqa: BLE001 -- inductor raises many kinds when a compiler is missing
    return None, f'{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ""}'
  return compiled, None


def add_torch_compile_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--torch-compile', choices=('auto', 'on', 'off'), default='auto',
                      help='also PyTorch under torch.compile (auto: when a CUDA GPU is there)')


def torch_compile_wanted(choice: str) -> bool:
  """--torch-compile's answer: on, off, or auto (when PyTorch sees a CUDA GPU)."""
  return choice == 'on' or (choice == 'auto' and cuda_available())


def cuda_available() -> bool:
  """Whether PyTorch sees a CUDA GPU (asked in a subprocess: the caller keeps no CUDA context)."""
  probe = subprocess.run([sys.executable, '-c', 'import torch; print(torch.cuda.is_available())'],
                         capture_output=True, text=True)
  return probe.stdout.strip() == 'True'


def torch_worker(arch: str, batch: int, mode: str, repeats: int, steps: int, dtype: str,
                 compiled: bool = False) -> dict:
  """PyTorch's images/second on the same work; `compiled`: the model under torch.compile, or
  {'unavailable': why}."""
  import torch
  from torch import nn

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  model = torch_report_model(arch)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest kernels, as XLA autotunes them on GPUs
  model = model.to(device)
  images = torch.randint(0, 255, (batch, 3, 224, 224), dtype=torch.uint8, device=device)
  labels = torch.arange(batch, device=device) % 2
  optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.5)
  loss_fn = nn.CrossEntropyLoss()
  autocast = lambda: torch.autocast(device, torch.bfloat16, enabled=dtype == 'bfloat16')
  if compiled:
    model.train(mode == 'train')
    with autocast():
      model, why = torch_compiled(model, images.float() / 255, optimizer if mode == 'train' else None)
    if model is None:
      return {'unavailable': why, 'device': device}
  synchronize = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  if mode == 'train':
    model.train()

    def run(n):
      for _ in range(n):
        optimizer.zero_grad(set_to_none=True)
        with autocast():
          loss = loss_fn(model(images.float() / 255), labels)
        loss.backward()
        optimizer.step()
      synchronize()
  else:
    model.eval()

    def run(n):
      with torch.no_grad(), autocast():
        for _ in range(n):
          torch.softmax(model(images.float() / 255), 1)
      synchronize()

  run(1)  # cuDNN's kernel search on a GPU
  rates, steps = timed_repeats(run, repeats, steps, batch)
  return {'rates': rates, 'steps': steps, 'threads': torch.get_num_threads(), 'device': device,
          'device_peak_mb': torch.cuda.max_memory_allocated() / 2 ** 20 if device == 'cuda' else None}


def feature_cache_worker(arch: str, batch: int, repeats: int, examples: int) -> dict:
  """A feature-extractor epoch over `examples` images: frozen backbone each step vs cached features."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxbrain.data import Preprocessing, SliceArrays
  from jaxbrain.models import create_model
  from jaxbrain.train.state import create_train_state
  from jaxbrain.train.steps import make_head_train_step, make_train_step
  from jaxbrain.train.strategies import cache_features, make_optimizer

  model = create_model(arch, num_classes=2, head_hidden=(256, 64), dropout_rate=0.25)
  rng = np.random.default_rng(0)
  data = SliceArrays(image=rng.integers(0, 255, (examples, 256, 256, 3), dtype=np.uint8),
                     mask=np.zeros((examples, 256, 256), np.uint8), label=(np.arange(examples) % 2).astype(np.int32),
                     patient=np.array(['p'] * examples), institution=np.array(['x'] * examples), slice=np.arange(examples),
                     path=np.array(['p'] * examples))
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  tx = make_optimizer(variables['params'], 1e-4, 0.5, frozen_backbone=True)
  preprocessing = Preprocessing(224, flip=True, normalize=True)
  frozen_step = jax.jit(make_train_step(model, tx, preprocessing, frozen_backbone=True))
  head_step = jax.jit(make_head_train_step(model, tx))
  features_fn = jax.jit(lambda x: model.apply(variables, x, method='features'))

  start = time.perf_counter()
  cached = cache_features(features_fn, data, np.arange(examples), preprocessing, batch, with_flipped=True)
  cache_s = time.perf_counter() - start

  def epoch(step, inputs):
    state = create_train_state(variables, tx, 0)
    for s in range(0, examples - batch + 1, batch):
      state, metrics = step(state, {**inputs(slice(s, s + batch)), 'label': data.label[s:s + batch]})
    jax.block_until_ready(metrics)

  frozen_epoch = lambda: epoch(frozen_step, lambda sl: {'image': data.image[sl]})
  cached_epoch = lambda: epoch(head_step, lambda sl: {'features': cached[sl]})
  frozen_epoch(), cached_epoch()  # compile
  timings = {}
  for name, fn in (('frozen_backbone_epoch_s', frozen_epoch), ('cached_features_epoch_s', cached_epoch)):
    samples = []
    for _ in range(repeats):
      start = time.perf_counter()
      fn()
      samples.append(time.perf_counter() - start)
    timings[name] = statistics.median(samples)
  return {**timings, 'cache_build_s': cache_s, 'examples': examples,
          'speedup': timings['frozen_backbone_epoch_s'] / timings['cached_features_epoch_s']}


def run_worker(args: list[str], env: dict | None = None, script: str = __file__) -> dict:
  """Runs one measurement (`script --worker ARGS`) in a fresh process; returns the JSON object its
  last line prints."""
  out = subprocess.run([sys.executable, script, '--worker', *args], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, **(env or {})})
  if out.returncode:
    raise RuntimeError(f'worker {args} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def _memory(ours: dict, theirs: dict) -> str:
  text = f"RSS {ours['peak_rss_mb']:.0f} / {theirs['peak_rss_mb']:.0f}"
  if ours['device_peak_mb'] or theirs['device_peak_mb']:
    text += f"; device {ours['device_peak_mb'] or 0:.0f} / {theirs['device_peak_mb'] or 0:.0f}"
  return text


def summarize(rates: list[float]) -> dict:
  return {'median': statistics.median(rates), 'min': min(rates), 'max': max(rates), 'repeats': len(rates)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='ResNet18 training at batch 8 only')
  parser.add_argument('--repeats', type=int, default=None)
  parser.add_argument('--archs', nargs='+', choices=('resnet18', 'resnet50'), default=('resnet18', 'resnet50'))
  parser.add_argument('--compute-dtype', choices=('float32', 'bfloat16'), default='float32',
                      help='bfloat16: mixed precision on both sides (meant for GPUs)')
  add_torch_compile_flag(parser)
  parser.add_argument('--out', default='bench/results', help='folder for results.json and results.md')
  parser.add_argument('--worker', nargs='+', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    kind, *rest = args.worker
    from jaxbrain import configure_cpu
    from jaxbrain.allocator import restart_with_tcmalloc, tcmalloc_loaded
    if not kind.startswith('torch') or os.environ.get('BENCH_TORCH_TCMALLOC'):
      restart_with_tcmalloc()  # as jaxbrain's own programs run (JAXBRAIN_ALLOCATOR=system: glibc)
    if not kind.startswith('torch'):
      configure_cpu()  # as jaxbrain's own programs run (JAXBRAIN_XLA_DEFAULTS=0: XLA's own settings)
    if kind == 'cache':
      result = feature_cache_worker(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
    else:
      arch, batch, mode, repeats, steps, dtype = rest[0], int(rest[1]), rest[2], int(rest[3]), int(rest[4]), rest[5]
      worker = {'jax': jax_worker, 'torch': torch_worker,
                'torch-compiled': functools.partial(torch_worker, compiled=True)}[kind]
      result = worker(arch, batch, mode, repeats, steps, dtype)
    result['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result['tcmalloc'] = tcmalloc_loaded()
    print(json.dumps(result))
    return

  cases = [('resnet18', 8, 'train')] if args.quick else [
      (arch, batch, mode) for arch in args.archs for batch in (8, 32) for mode in ('train', 'infer')]
  results, table = {}, []
  compile_torch = torch_compile_wanted(args.torch_compile)
  for arch, batch, mode in cases:
    steps = max(2, 64 // batch) if arch == 'resnet18' else max(1, 32 // batch)
    repeats = args.repeats or (3 if args.quick or arch == 'resnet50' else 4)  # keeps the full run under 15 min
    worker_args = [arch, str(batch), mode, str(repeats), str(steps), args.compute_dtype]
    ours, theirs = run_worker(['jax', *worker_args]), run_worker(['torch', *worker_args])
    ours_s, theirs_s = summarize(ours['rates']), summarize(theirs['rates'])
    name = f'{arch}_{mode}_b{batch}'
    results[name] = {'jaxbrain': round(ours_s['median'], 2), 'pytorch': round(theirs_s['median'], 2),
                     'ratio': round(ours_s['median'] / theirs_s['median'], 3),
                     'steps_per_repeat': {'jaxbrain': ours['steps'], 'pytorch': theirs['steps']},
                     'xla_flags': ours['xla_flags'], 'jaxbrain_tcmalloc': ours['tcmalloc'],
                     'jaxbrain_range': [round(ours_s['min'], 2), round(ours_s['max'], 2)],
                     'pytorch_range': [round(theirs_s['min'], 2), round(theirs_s['max'], 2)],
                     'jaxbrain_compile_s': round(ours['compile_s'], 1),
                     'peak_rss_mb': {'jaxbrain': round(ours['peak_rss_mb']), 'pytorch': round(theirs['peak_rss_mb'])},
                     'device_peak_mb': {'jaxbrain': ours['device_peak_mb'], 'pytorch': theirs['device_peak_mb']},
                     'devices': {'jaxbrain': ours['device'], 'pytorch': theirs['device']}}
    plain = tuned = peer = '—'
    if compile_torch:  # the PyTorch a user runs for speed: its model under torch.compile
      measured = run_worker(['torch-compiled', *worker_args])
      if 'unavailable' in measured:
        results[name]['pytorch_compiled'] = peer = f"unavailable here: {measured['unavailable']}"
      else:
        compiled_s = summarize(measured['rates'])
        results[name]['pytorch_compiled'] = round(compiled_s['median'], 2)
        results[name]['ratio_pytorch_compiled'] = round(ours_s['median'] / compiled_s['median'], 3)
        peer = f"{compiled_s['median']:.1f} ({results[name]['ratio_pytorch_compiled']:.2f})"
    if ours['device'] == 'cpu':  # jaxbrain with XLA's own flags and glibc's malloc: what its CPU defaults are worth
      plain_s = summarize(run_worker(['jax', *worker_args], env={'JAXBRAIN_XLA_DEFAULTS': '0',
                                                                 'JAXBRAIN_ALLOCATOR': 'system'})['rates'])
      results[name]['jaxbrain_defaults_off'] = round(plain_s['median'], 2)
      results[name]['ratio_defaults_off'] = round(plain_s['median'] / theirs_s['median'], 3)
      plain = f"{plain_s['median']:.1f} ({results[name]['ratio_defaults_off']:.2f})"
    if arch == 'resnet18' and mode == 'train' and ours['tcmalloc']:  # PyTorch given jaxbrain's allocator too
      tuned_s = summarize(run_worker(['torch', *worker_args], env={'BENCH_TORCH_TCMALLOC': '1'})['rates'])
      results[name]['pytorch_tcmalloc'] = round(tuned_s['median'], 2)
      results[name]['ratio_pytorch_tcmalloc'] = round(ours_s['median'] / tuned_s['median'], 3)
      tuned = f"{tuned_s['median']:.1f} ({results[name]['ratio_pytorch_tcmalloc']:.2f})"
    table.append(f"| {arch} | {mode} | {batch} | {ours_s['median']:.1f} ({ours_s['min']:.1f}–{ours_s['max']:.1f}) | "
                 f"{theirs_s['median']:.1f} ({theirs_s['min']:.1f}–{theirs_s['max']:.1f}) | "
                 f"**{results[name]['ratio']:.2f}** | {peer} | {plain} | {tuned} | "
                 f"{ours['compile_s']:.1f} | {_memory(ours, theirs)} |")
    print(table[-1], flush=True)
  if not args.quick:
    cache = run_worker(['cache', 'resnet18', '8', '3', '96'])
    results['feature_cache_resnet18'] = {k: round(v, 3) if isinstance(v, float) else v for k, v in cache.items()}
    print(f"feature-extractor epoch ({cache['examples']} images, ResNet18): frozen backbone "
          f"{cache['frozen_backbone_epoch_s']:.2f} s, cached features {cache['cached_features_epoch_s']:.4f} s "
          f"({cache['speedup']:.0f}x); building the cache once: {cache['cache_build_s']:.1f} s", flush=True)
  header = ('| model | step | batch | jaxbrain img/s (range) | PyTorch img/s (range) | ratio | PyTorch, torch.compile '
            'img/s (ratio) | jaxbrain without its defaults img/s (ratio) | PyTorch with tcmalloc img/s (ratio) | jaxbrain '
            'compile s | peak memory MB (jax / torch) |\n|---|---|---|---|---|---|---|---|---|---|---|')
  machine = (f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores; devices: jaxbrain {ours["device"]}, '
             f'PyTorch {theirs["device"]}; {args.compute_dtype}')
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'results.md').write_text(f'{machine}; jaxbrain XLA defaults: {ours["xla_flags"]!r}; jaxbrain allocator: '
                                  f'{"tcmalloc" if ours["tcmalloc"] else "glibc (tcmalloc not installed)"}\n\n{header}\n' +
                                  '\n'.join(table) + '\n')
  (out / 'results.json').write_text(json.dumps(results, indent=2) + '\n')
  print(json.dumps(results))


if __name__ == '__main__':
  main()
