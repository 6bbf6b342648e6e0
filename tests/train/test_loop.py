"""The runner end to end on phantom data: outputs, exact resume, SIGKILL/SIGTERM, errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import safetensors.numpy

from jaxbrain.models import WeightsNotFoundError, load_torchvision_weights
from jaxbrain.train import RunExistsError, TrainConfig, train_and_evaluate

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(image_size=32, batch_size=4, learning_rate=0.01, init='scratch', bootstrap_samples=20, head_hidden=(32, 16))


def config(data_dir, workdir, **changes):
  return TrainConfig(**{'experiment': 'test', 'data_dir': str(data_dir), 'workdir': str(workdir), **TINY, **changes})


def final_state(run_dir: Path) -> dict:
  last = run_dir / 'checkpoints' / 'last'
  step = max(int(p.name) for p in last.iterdir() if p.name.isdigit())
  restored = ocp.StandardCheckpointer().restore((last / str(step) / 'state').resolve())
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(restored)}


def assert_same_state(a: dict, b: dict):
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_outputs_and_metrics(phantom_png, tmp_path):
  final = train_and_evaluate(config(phantom_png, tmp_path, epochs=2), progress=False)
  run = tmp_path / 'test' / 'patient-scratch-32px-seed0'
  for name in ('config.json', 'metrics.json', 'metrics.jsonl', 'curves.png', 'confusion_matrix.png', 'roc.png'):
    assert (run / name).is_file(), name
  assert list((run / 'tensorboard').glob('events.out.tfevents.*'))
  metrics = json.loads((run / 'metrics.json').read_text())
  for key in ('accuracy', 'balanced_accuracy', 'roc_auc', 'sensitivity', 'specificity', 'precision', 'f1',
              'confusion_matrix', 'split', 'init', 'data', 'counts', 'confidence_95'):
    assert key in metrics, key
  assert metrics['init'].startswith('scratch (random initialization')
  assert sum(map(sum, metrics['confusion_matrix'])) == metrics['counts']['eval_slices']
  assert [r['epoch'] for r in map(json.loads, (run / 'metrics.jsonl').read_text().splitlines())] == [0, 1]
  assert final['accuracy'] == metrics['accuracy']
  with pytest.raises(RunExistsError, match='--resume'):
    train_and_evaluate(config(phantom_png, tmp_path, epochs=2), progress=False)


def test_resume_is_exact(phantom_png, tmp_path):
  train_and_evaluate(config(phantom_png, tmp_path, epochs=2, run_name='straight'), progress=False)
  train_and_evaluate(config(phantom_png, tmp_path, epochs=1, run_name='resumed'), progress=False)
  train_and_evaluate(config(phantom_png, tmp_path, epochs=2, run_name='resumed'), resume=True, progress=False)
  assert_same_state(final_state(tmp_path / 'test' / 'straight'), final_state(tmp_path / 'test' / 'resumed'))
  history = (tmp_path / 'test' / 'resumed' / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(r)['epoch'] for r in history] == [0, 1]


def launch(data_dir, workdir, run_name):
  args = [sys.executable, '-m', 'experiments.exp20', '--data-dir', str(data_dir), '--workdir', str(workdir),
          '--run-name', run_name, '--init', 'scratch', '--image-size', '32', '--batch-size', '4', '--epochs', '3',
          '--learning-rate', '0.01', '--bootstrap-samples', '0', '--no-progress']
  return args, subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_first_epoch(process, run_dir: Path, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    history = run_dir / 'metrics.jsonl'
    if history.exists() and history.read_text().count('\n') >= 1:
      time.sleep(0.3)  # into the second epoch
      return
    assert process.poll() is None, process.stdout.read()
    time.sleep(0.02)
  pytest.fail('no epoch finished in time')


@pytest.mark.slow
def test_killed_and_terminated_runs_resume_exactly(phantom_tif, tmp_path):
  args, reference = launch(phantom_tif, tmp_path, 'reference')
  assert reference.wait() == 0, reference.stdout.read()

  args, killed = launch(phantom_tif, tmp_path, 'killed')
  wait_for_first_epoch(killed, tmp_path / 'exp20' / 'killed')
  killed.send_signal(signal.SIGKILL)
  assert killed.wait() == -signal.SIGKILL
  assert not (tmp_path / 'exp20' / 'killed' / 'metrics.json').exists()
  subprocess.run(args + ['--resume'], cwd=ROOT, check=True, capture_output=True)

  args, terminated = launch(phantom_tif, tmp_path, 'terminated')
  wait_for_first_epoch(terminated, tmp_path / 'exp20' / 'terminated')
  terminated.send_signal(signal.SIGTERM)
  out = terminated.stdout.read()
  assert terminated.wait() == 130, out
  assert 'checkpoint saved' in out and '--resume' in out
  resumed = subprocess.run(args + ['--resume'], cwd=ROOT, check=True, capture_output=True, text=True)
  assert 'resumed' in resumed.stdout and 'batch 0' not in resumed.stdout.split('resumed')[1].splitlines()[0]

  want = final_state(tmp_path / 'exp20' / 'reference')
  assert_same_state(want, final_state(tmp_path / 'exp20' / 'killed'))
  assert_same_state(want, final_state(tmp_path / 'exp20' / 'terminated'))


def test_imagenet_without_weights_fails_with_help(phantom_png, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty'))
  monkeypatch.delenv('JAXBRAIN_WEIGHTS', raising=False)
  with pytest.raises(WeightsNotFoundError, match='resnet18-f37072fd.pth'):
    train_and_evaluate(config(phantom_png, tmp_path, init='imagenet'), progress=False)
  assert not (tmp_path / 'test').exists()
  from experiments import exp20
  with pytest.raises(SystemExit) as exit_:
    exp20.main(exp20.CONFIG, ['--data-dir', str(phantom_png), '--workdir', str(tmp_path), '--init', 'imagenet'])
  assert exit_.value.code == 2
  assert '--init scratch' in capsys.readouterr().err


def test_feature_extractor_on_ported_weights_keeps_the_backbone(phantom_png, tmp_path):
  from tests.models.torch_reference import reference
  path = tmp_path / 'resnet18.safetensors'
  safetensors.numpy.save_file({k: v.numpy() for k, v in reference('resnet18').state_dict().items()}, path)
  final = train_and_evaluate(config(phantom_png, tmp_path, init='imagenet', weights=str(path),
                                    strategy='feature_extractor', epochs=1), progress=False)
  assert final['init'] == f'imagenet ({path})'
  header = json.loads((tmp_path / 'test' / 'patient-imagenet-32px-seed0' / 'config.json').read_text())
  assert header['feature_cache'] is True
  state = final_state(tmp_path / 'test' / 'patient-imagenet-32px-seed0')
  ported = load_torchvision_weights('resnet18', path)
  for p, value in jax.tree_util.tree_leaves_with_path(ported['params']['backbone']):
    np.testing.assert_array_equal(state["['params']['backbone']" + jax.tree_util.keystr(p)], value)
