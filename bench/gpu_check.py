"""The prepared check for a lent GPU: the performance measurements, in order of importance, within one budget.

  python bench/gpu_check.py --data-dir /tmp/k3m --budget-s 480 --out "$OUT"   # on the GPU machine
  python bench/gpu_check.py --smoke --out /tmp/gpu-check                        # the same stages, tiny, on a CPU

Stages, each a subprocess with its share of what is left of the budget (`SHARES`; time an earlier
stage did not use goes to the later ones; a stage that does not fit is recorded as not run, one
cut off by its limit as such, never half-reported):
1. `end_to_end`: bench/end_to_end.py at 224x8, 224x32 and 64x8, jaxbrain against eager and
   compiled PyTorch, with cold and warm first-step times;
2. `resume_gap`: bench/resume_gap.py, how far a resumed run lands from the uninterrupted one with
   XLA's defaults and with its deterministic-ops flag, and what that flag costs;
3. `exp20`: the report's protocol from scratch (224 px, 30 epochs, batch 8) twice in one workdir:
   the first builds the dataset and fills the compilation cache, the second is the warm end-to-end
   wall time the performance target is about;
4. `folds`: `experiments.folds seg03` and `exp22` with `--parallel 5` (five folds side by side on
   the one GPU), their pooled test figures;
5. `bfloat16`: bench/run.py --quick with `--compute-dtype bfloat16`, beside float32.
Writes OUT/gpu_check.json: per stage its command, limit, seconds, exit status and the stage's own
JSON result (or the tail of its output). Everything runs from the repository root; the data
(`../shared/tools/device_chunks.sh` cuts it into chunks a `run` call carries) must be in place.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARES = {'end_to_end': 0.3, 'resume_gap': 0.1, 'exp20': 0.2, 'folds': 0.3, 'bfloat16': 0.1}  # of the budget, in stage order
MIN_STAGE_S = 10  # a stage given less is not started
TINY = ['--image-size', '32', '--epochs', '1', '--batch-size', '4', '--bootstrap-samples', '0']


def stages(data_dir: str, out: Path, smoke: bool) -> list[tuple[str, list[str], Path | None]]:
  """(name, command, JSON file the command writes or None) per stage, in order of importance."""
  python = sys.executable
  data = ['--data-dir', data_dir]
  if smoke:
    cases, tiny, bench_flags = ['32x8'], TINY, ['--repeats', '1']
  else:
    cases, tiny, bench_flags = ['224x8', '224x32', '64x8'], [], []
  exp20_command = [python, '-m', 'experiments.exp20', *data, '--init', 'scratch', '--workdir', str(out / 'exp20'),
                   '--no-progress', *tiny]
  return [
      ('end_to_end', [python, 'bench/end_to_end.py', *data, '--cases', *cases, '--torch-compile', 'auto',
                      '--out', str(out / 'end_to_end')], out / 'end_to_end' / 'end_to_end.json'),
      ('resume_gap', [python, 'bench/resume_gap.py', *data, '--image-size', '32' if smoke else '64',
                      '--out', str(out / 'resume_gap')], out / 'resume_gap' / 'resume_gap.json'),
      ('exp20_cold', [*exp20_command, '--run-name', 'cold'], None),
      ('exp20_warm', [*exp20_command, '--run-name', 'warm'], None),
      ('folds_seg03', [python, '-m', 'experiments.folds', 'seg03', '--parallel', '5', *data,
                       '--workdir', str(out / 'folds'), '--no-progress', *tiny, *(['--unet-width', '4'] if smoke else [])],
       None),
      ('folds_exp22', [python, '-m', 'experiments.folds', 'exp22', '--parallel', '5', *data,
                       '--workdir', str(out / 'folds'), '--no-progress', *tiny], None),
      ('bfloat16', [python, 'bench/run.py', '--quick', '--compute-dtype', 'bfloat16', *bench_flags,
                    '--out', str(out / 'bfloat16')], out / 'bfloat16' / 'results.json'),
  ]


def share(name: str) -> float:
  """The budget share of a stage (exp20's and the folds' split evenly between their two runs)."""
  group = name.split('_')[0] if name.startswith(('exp20', 'folds')) else name
  return SHARES[group] / (2 if group != name else 1)


def run_stage(command: list[str], limit_s: float, result_file: Path | None) -> dict:
  """One stage within `limit_s`: its exit status, wall seconds and JSON result (its file, else
  the last JSON line it printed), or the tail of its output."""
  began = time.perf_counter()
  try:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit_s,
                          env={**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT),
                                                                                       os.environ.get('PYTHONPATH')]))})
  except subprocess.TimeoutExpired as e:
    tail = (e.stdout or b'')[-2000:]
    return {'status': 'cut off by its limit', 'seconds': round(time.perf_counter() - began, 1),
            'tail': tail.decode(errors='replace') if isinstance(tail, bytes) else tail}
  record = {'status': done.returncode, 'seconds': round(time.perf_counter() - began, 1)}
  if result_file is not None and result_file.is_file():
    record['result'] = json.loads(result_file.read_text(encoding='utf-8'))
  elif done.returncode == 0:
    record['tail'] = done.stdout[-3000:]
  if done.returncode != 0:
    record['tail'] = (done.stdout + done.stderr)[-3000:]
  return record


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python bench/gpu_check.py', description=__doc__.splitlines()[0])
  parser.add_argument('--data-dir', help='a kaggle_3m folder (with --smoke: default a small phantom tree)')
  parser.add_argument('--budget-s', type=float, default=480, help='seconds for all stages (default 480)')
  parser.add_argument('--smoke', action='store_true', help='tiny stages on phantom data: checks the script on a CPU')
  parser.add_argument('--out', required=True, help='folder for gpu_check.json and the stages\' outputs')
  args = parser.parse_args(argv)
  out = Path(args.out).resolve()
  out.mkdir(parents=True, exist_ok=True)
  data_dir = args.data_dir
  if data_dir is None:
    if not args.smoke:
      parser.error('--data-dir is needed (the real data: the GPU check measures the full-size recipes)')
    sys.path.insert(0, str(ROOT))
    from jaxbrain.data import write_phantom
    data_dir = str(write_phantom(out / 'phantom' / 'kaggle_3m', n_patients=10, slices_per_patient=(12, 16),
                                 image_format='png'))
  began = time.perf_counter()
  report = {'machine': f'{platform.machine()}, {os.cpu_count()} cores', 'data': data_dir, 'budget_s': args.budget_s,
            'smoke': args.smoke, 'stages': {}}
  planned = stages(str(Path(data_dir).resolve()), out, args.smoke)
  for k, (name, command, result_file) in enumerate(planned):
    left = args.budget_s - (time.perf_counter() - began)
    limit = left * share(name) / sum(share(later) for later, _, _ in planned[k:])  # time saved earlier is shared on
    if limit < MIN_STAGE_S:
      report['stages'][name] = {'status': 'not run: the budget was spent', 'command': command}
      continue
    print(f'{name}: up to {limit:.0f} s: {" ".join(command)}', flush=True)
    report['stages'][name] = {'command': command, 'limit_s': round(limit), **run_stage(command, limit, result_file)}
    print(f'{name}: {report["stages"][name]["status"]} in {report["stages"][name]["seconds"]} s', flush=True)
  report['seconds'] = round(time.perf_counter() - began, 1)
  (out / 'gpu_check.json').write_text(json.dumps(report, indent=1) + '\n', encoding='utf-8')
  print(f'wrote {out / "gpu_check.json"}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
