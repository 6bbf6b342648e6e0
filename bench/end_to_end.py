"""The whole run against its step: how much of the jitted step's speed a real experiment keeps.

  python bench/end_to_end.py --quick                      # phantom data, 32 and 64 px, batch 8 (< 3 min on 2 cores)
  python bench/end_to_end.py --data-dir ../shared/data/lgg/kaggle_3m   # 32, 64, 224 px at batch 8 and 224 px at 32

Per case (image size, batch), the experiment runner itself (`train_and_evaluate` on exp20's recipe
from scratch: ResNet18, report head, SGD 1e-4 momentum 0.5, flip + normalize) trains a few epochs,
and its own epoch records give, over the epochs after the first (which compiles):
  loop_img_s   training images / the seconds of the training steps (`training_seconds`)
  run_img_s    the same images / the wall time of those whole epochs, validation and checkpoints included
  step_img_s   the runner's own jitted step (built as the runner builds it) on one placed input,
               repeated: no loop, no metrics summed, nothing read back but the last step
and `loop_over_step`, `run_over_step`; `time_to_first_step_s` is the runner's start to its first
finished step (dataset read and compile included), in a process whose compilation cache starts
empty, and `time_to_first_step_warm_s` the same in a second process that finds the programs the
first one compiled in the cache (`jaxbrain.compilation_cache`, as a second run of a recipe does). `dataset_build_s` is a fresh TFDS build of the
data (`dataset_load_s`: reading the built dataset into memory, what every later run pays).

The peer is the plain PyTorch loop a user would write for the same work: a `DataLoader` with one
worker per core decoding the PNG files (resize, flip, normalize per example), the same model
(torchvision's ResNet18 with the report head, on the GPU when there is one), optimizer and batch, validation each epoch and a
`torch.save` checkpoint; measured the same way. Each measurement runs in its own process, one
framework at a time. Without --data-dir, a 16-patient phantom tree of PNG files is written first.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import (add_torch_compile_flag, run_worker, timed_repeats, torch_compile_wanted,  # noqa: E402
                       torch_compiled, torch_report_model)

QUICK_CASES = ((32, 8), (64, 8))
CASES = ((32, 8), (64, 8), (224, 8), (224, 32))
PHANTOM_PATIENTS = 16
BARE_STEPS = 8  # per repeat of the bare step (at least a second of them), 3 repeats, median


def _config(data_dir: str, workdir: str, size: int, batch: int, epochs: int):
  from experiments.configs import EXPERIMENTS
  return EXPERIMENTS['exp20'].with_flags(data_dir=data_dir, workdir=workdir, init='scratch', image_size=size,
                                         batch_size=batch, epochs=epochs, run_name=f'bench-{size}px-b{batch}',
                                         evals=(), keep_checkpoints=1, bootstrap_samples=0)


def _steady(history: list[dict], steps_per_epoch: int, batch: int) -> dict:
  """loop_img_s and run_img_s over the epochs after the first, from the epoch records
  (`elapsed_seconds` is taken at each epoch's end, as its validation is queued, so consecutive
  differences hold one whole cycle: the training, the previous epoch's validation read while it
  starts, and the checkpoint)."""
  steady = history[1:]
  images = steps_per_epoch * batch * len(steady)
  return {'loop_img_s': images / sum(r['training_seconds'] for r in steady),
          'run_img_s': images / (history[-1]['elapsed_seconds'] - history[0]['elapsed_seconds']),
          'epochs_measured': len(steady)}


def jax_case(data_dir: str, workdir: str, size: int, batch: int, epochs: int) -> dict:
  """The runner on the case, then its bare step."""
  import jax

  from jaxbrain.data import make_split
  from jaxbrain.train import train_and_evaluate
  from jaxbrain.train import sharding
  from jaxbrain.train.loop import prepare_data
  from jaxbrain.train.outputs import read_history
  from jaxbrain.train.state import create_train_state
  from jaxbrain.train.tasks import build_task

  config = _config(data_dir, workdir, size, batch, epochs)
  final = train_and_evaluate(config, overwrite=True, progress=False)
  run_dir = config.run_dir
  steps_per_epoch = final['counts']['train_slices'] // batch
  result = {**_steady(read_history(run_dir), steps_per_epoch, batch),
            'time_to_first_step_s': final['timing']['seconds_to_first_step'],
            'data_on_devices': final['data_on_devices']}

  data, _, _ = prepare_data(config)
  split = make_split(config.data.split, data.patient, data.label, fold=config.data.fold, seed=config.seed)
  task = build_task(config, data, split)
  mesh = sharding.make_mesh()
  state = sharding.replicate(create_train_state(task.variables, task.tx, config.seed), mesh)
  fed = sharding.feed(task.train_step, mesh, task.arrays('train'), (sharding.replicated(mesh),) * 2,
                      donate_state=True)  # the runner's own compiled step
  placed = fed.put(task.rows('train', split.train[:batch]))
  holder = {'state': state}

  def run(n: int) -> None:
    for _ in range(n):
      holder['state'], metrics = fed.run(holder['state'], placed)
    jax.block_until_ready(metrics)

  run(1)
  rates, _ = timed_repeats(run, 3, BARE_STEPS, batch)
  result['step_img_s'] = statistics.median(rates)
  result['device'] = f'{jax.device_count()} x {jax.devices()[0].device_kind}'
  return result


def torch_case(data_dir: str, workdir: str, size: int, batch: int, epochs: int, compiled: bool = False) -> dict:
  """The plain PyTorch loop on the same patients, files and recipe; `compiled`: its model under
  `torch.compile` (what a PyTorch user runs for speed), or {'unavailable': why} when this machine
  cannot compile it (no compiler, an unsupported backend)."""
  import numpy as np
  import torch
  from torch import nn
  from torch.utils.data import DataLoader, Dataset
  from PIL import Image

  from jaxbrain.data import builder, make_split
  from jaxbrain.data.kaggle3m import fingerprint
  from jaxbrain.folders import WorkDir

  root = Path(data_dir)
  data = builder.load_dataset(root, builder.default_data_dir(root, WorkDir(workdir).tfds, fingerprint(root)))
  split = make_split('patient', data.patient, data.label, seed=0)  # the runner's split, so the same files
  began = time.perf_counter()
  mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

  class Slices(Dataset):
    def __init__(self, indices, train: bool):
      self.paths, self.labels, self.train = [root / data.path[i] for i in indices], data.label[indices], train

    def __len__(self):
      return len(self.paths)

    def __getitem__(self, i):
      x = torch.from_numpy(np.asarray(Image.open(self.paths[i]))).permute(2, 0, 1).float() / 255
      x = nn.functional.interpolate(x[None], size=(size, size), mode='bilinear', antialias=True)[0]
      if self.train and torch.rand(()) < 0.5:
        x = x.flip(-1)
      return (x - mean) / std, int(self.labels[i])

  workers = os.cpu_count()
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.backends.cudnn.benchmark = True  # as bench/run.py: cuDNN picks its kernels, as XLA autotunes them
  synchronize = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  torch.manual_seed(0)
  model = torch_report_model('resnet18').to(device)
  optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.5)
  if compiled:
    model, why = torch_compiled(model, torch.zeros(batch, 3, size, size, device=device), optimizer)
    if model is None:
      return {'unavailable': why}
  loader = dict(num_workers=workers, persistent_workers=True, pin_memory=device == 'cuda')
  train = DataLoader(Slices(split.train, True), batch, shuffle=True, drop_last=True, **loader)
  validation = DataLoader(Slices(split.validation, False), batch, **loader)
  history, first_step = [], None
  for epoch in range(epochs):
    model.train()
    epoch_began, total = time.perf_counter(), 0.0
    for images, labels in train:
      images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
      loss = nn.functional.cross_entropy(model(images), labels)
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      total += loss.item()
      first_step = first_step or time.perf_counter() - began
    training_seconds = time.perf_counter() - epoch_began
    model.eval()
    with torch.no_grad():
      probabilities = torch.cat([torch.softmax(model(images.to(device)), 1)[:, 1].cpu() for images, _ in validation])
    history.append({'training_seconds': training_seconds, 'elapsed_seconds': time.perf_counter() - began,
                    'validation_examples': len(probabilities)})
    torch.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict()}, Path(workdir) / 'torch_last.pt')
  model.train()
  images, labels = (x.to(device) for x in next(iter(train)))

  def run(n: int) -> None:
    for _ in range(n):
      loss = nn.functional.cross_entropy(model(images), labels)
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
    synchronize()

  rates, _ = timed_repeats(run, 3, BARE_STEPS, batch)
  return {**_steady(history, len(split.train) // batch, batch), 'time_to_first_step_s': first_step,
          'step_img_s': statistics.median(rates), 'threads': torch.get_num_threads(), 'loader_workers': workers,
          'device': device}


def jax_warm_case(data_dir: str, workdir: str, size: int, batch: int, epochs: int) -> dict:
  """The runner on the case again, in a new process: its first step with the compiled programs the
  cold run left in the cache."""
  from jaxbrain.train import train_and_evaluate

  final = train_and_evaluate(_config(data_dir, workdir, size, batch, 1), overwrite=True, progress=False)
  return {'time_to_first_step_s': final['timing']['seconds_to_first_step']}


def build_case(data_dir: str, workdir: str) -> dict:
  """A fresh TFDS build of `data_dir` where the runner keeps its datasets, then its load."""
  from jaxbrain.data import builder
  from jaxbrain.data.kaggle3m import fingerprint
  from jaxbrain.folders import WorkDir

  root = Path(data_dir)
  began = time.perf_counter()
  built = builder.build_dataset(root, builder.default_data_dir(root, WorkDir(workdir).tfds, fingerprint(root)))
  built_at = time.perf_counter()
  data = builder.load_arrays(built)
  return {'dataset_build_s': built_at - began, 'dataset_load_s': time.perf_counter() - built_at, 'slices': len(data),
          'cores': len(os.sched_getaffinity(0))}


def _with_ratios(case: dict) -> dict:
  return {**case, 'loop_over_step': case['loop_img_s'] / case['step_img_s'],
          'run_over_step': case['run_img_s'] / case['step_img_s']}


def _rounded(value):
  if isinstance(value, float):
    return round(value, 3 if abs(value) < 10 else 1)
  if isinstance(value, dict):
    return {k: _rounded(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_rounded(v) for v in value]
  return value


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-dir', help='a kaggle_3m folder (default: a phantom tree written for the run)')
  parser.add_argument('--quick', action='store_true', help=f'cases {QUICK_CASES}')
  parser.add_argument('--epochs', type=int, help='epochs per case (default 3); the first is not measured')
  parser.add_argument('--cases', nargs='+', metavar='SIZExBATCH', help='e.g. 224x8 224x32')
  parser.add_argument('--no-torch', action='store_true', help='skip the PyTorch peer')
  add_torch_compile_flag(parser)
  parser.add_argument('--out', default='bench/results', help='folder for end_to_end.json and end_to_end.md')
  parser.add_argument('--worker', nargs='+', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    kind, data_dir, workdir, *rest = args.worker
    if kind != 'torch':
      from jaxbrain import compilation_cache, configure_cpu
      from jaxbrain.allocator import restart_with_tcmalloc
      restart_with_tcmalloc()  # as jaxbrain's own programs run
      configure_cpu()
      compilation_cache.enable(workdir)
    numbers = [int(x) for x in rest]
    worker = {'jax': jax_case, 'jax-warm': jax_warm_case, 'torch': torch_case, 'build': build_case,
              'torch-compiled': functools.partial(torch_case, compiled=True)}[kind]
    print(json.dumps(worker(data_dir, workdir, *numbers)))
    return

  epochs = args.epochs or 3
  cases = [tuple(int(x) for x in case.split('x')) for case in args.cases] if args.cases else (
      QUICK_CASES if args.quick else CASES)
  began = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix='jaxbrain-end-to-end-') as workdir:
    data_dir = args.data_dir
    if data_dir is None:
      from jaxbrain.data import write_phantom
      data_dir = str(write_phantom(Path(workdir) / 'phantom' / 'kaggle_3m', n_patients=PHANTOM_PATIENTS, seed=0,
                                   image_format='png'))
    data_dir = str(Path(data_dir).resolve())
    result = {'data': args.data_dir or f'phantom ({PHANTOM_PATIENTS} patients, PNG)', 'epochs': epochs,
              'machine': f'{platform.machine()}, {os.cpu_count()} cores',
              **run_worker(['build', data_dir, workdir], script=__file__)}
    print(f'dataset: built in {result["dataset_build_s"]:.1f} s, loaded in {result["dataset_load_s"]:.1f} s '
          f'({result["slices"]} slices, {result["cores"]} cores)', flush=True)
    result['cases'], result['pytorch'], result['pytorch_compiled'] = [], [], []
    compiled = torch_compile_wanted(args.torch_compile)
    table = ['| framework | px | batch | loop img/s | run img/s | step img/s | loop/step | run/step | first step s, '
             'cold | warm |', '|---|---|---|---|---|---|---|---|---|---|']
    print('\n'.join(table), flush=True)
    for size, batch in cases:
      for framework, kind, rows in (('jaxbrain', 'jax', result['cases']), ('PyTorch', 'torch', result['pytorch']),
                                    ('PyTorch, torch.compile', 'torch-compiled', result['pytorch_compiled'])):
        if kind.startswith('torch') and args.no_torch or kind == 'torch-compiled' and not compiled:
          continue
        numbers = [str(size), str(batch), str(epochs)]
        measured = run_worker([kind, data_dir, workdir, *numbers], script=__file__)
        if 'unavailable' in measured:
          rows.append({'image_size': size, 'batch': batch, **measured})
          table.append(f'| {framework} | {size} | {batch} | unavailable here: {measured["unavailable"]} |')
          print(table[-1], flush=True)
          continue
        case = _with_ratios({'image_size': size, 'batch': batch, **measured})
        if kind == 'jax':
          warm = run_worker(['jax-warm', data_dir, workdir, *numbers], script=__file__)
          case['time_to_first_step_warm_s'] = warm['time_to_first_step_s']
        rows.append(case)
        warm = f'{case["time_to_first_step_warm_s"]:.1f}' if 'time_to_first_step_warm_s' in case else '-'
        table.append(f'| {framework} | {size} | {batch} | {case["loop_img_s"]:.1f} | {case["run_img_s"]:.1f} | '
              f'{case["step_img_s"]:.1f} | {case["loop_over_step"]:.3f} | {case["run_over_step"]:.3f} | '
              f'{case["time_to_first_step_s"]:.1f} | {warm} |')
        print(table[-1], flush=True)
  result['device'] = result['cases'][0]['device']
  result['time_to_first_step_s'] = result['cases'][0]['time_to_first_step_s']
  result['time_to_first_step_warm_s'] = result['cases'][0]['time_to_first_step_warm_s']
  result['seconds'] = time.perf_counter() - began
  result = _rounded(result)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'end_to_end.json').write_text(json.dumps(result, indent=2) + '\n')
  (out / 'end_to_end.md').write_text(f'{result["device"]}; {result["machine"]}; data {result["data"]}, {epochs} epochs '
                                     f'(the first not measured); dataset build {result["dataset_build_s"]} s, load '
                                     f'{result["dataset_load_s"]} s\n\n' + '\n'.join(table) + '\n')
  print(json.dumps(result))


if __name__ == '__main__':
  main()
