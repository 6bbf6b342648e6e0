"""The runner end to end on phantom data: outputs, exact resume, SIGKILL/SIGTERM, errors."""
import csv
import functools
import json
import os
import shutil
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
from PIL import Image

from jaxbrain.models import WeightsNotFoundError, load_torchvision_weights
from jaxbrain.config import Config
from jaxbrain.train import RunExistsError, train_and_evaluate

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(image_size=32, batch_size=4, learning_rate=0.01, init='scratch', bootstrap_samples=20, head_hidden=(32, 16))


def config(data_dir, workdir, **changes):
  return Config.from_flags(**{'experiment': 'test', 'data_dir': str(data_dir), 'workdir': str(workdir), **TINY, **changes})


def bare(data_dir, workdir, **changes):
  """`config` without evaluators or bootstrap: for tests of the training itself."""
  return config(data_dir, workdir, bootstrap_samples=0, evals=(), **changes)


def final_state(run_dir: Path) -> dict:
  last = run_dir / 'checkpoints' / 'last'
  step = max(int(p.name) for p in last.iterdir() if p.name.isdigit())
  restored = ocp.StandardCheckpointer().restore((last / str(step) / 'state').resolve())
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(restored)}


def assert_same_state(a: dict, b: dict):
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} from the TensorBoard event files under `folder` (TFRecord framing);
  an image's value is its height."""
  from tensorboardX.proto.event_pb2 import Event
  scalars = {}
  for path in sorted(folder.rglob('events.out.tfevents.*')):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      length = int.from_bytes(data[offset:offset + 8], 'little')
      event = Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 16 + length
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append(
            (event.step, value.image.height if value.HasField('image') else value.simple_value))
  return scalars


def test_tensorboard_has_per_step_loss_and_learning_rate(phantom_png, tmp_path):
  """Catches per-step values lost or misplaced by the device-side buffer (a step missing, two steps
  in one slot), a learning rate off by one step, epochs counted from 0, no hyperparameters, and no
  evaluation loss or overlay images per epoch."""
  final = train_and_evaluate(config(phantom_png, tmp_path, epochs=2, lr_schedule='cosine'), progress=False)
  scalars = tensorboard_scalars(tmp_path / 'test' / 'patient-scratch-32px-seed0' / 'tensorboard')
  steps = final['counts']['train_slices'] // 4
  losses = scalars['train/loss_per_step']
  assert [s for s, _ in losses] == list(range(1, 2 * steps + 1)) and len({v for _, v in losses}) > steps
  rates = dict(scalars['train/learning_rate'])
  assert rates[1] == pytest.approx(0.01) and rates[2 * steps] < rates[steps] < rates[1]
  assert rates[steps + 1] == pytest.approx(0.01 * 0.5 * (1 + np.cos(np.pi * steps / (2 * steps))), rel=1e-5)
  assert [s for s, _ in scalars['train/loss']] == [1, 2] and [s for s, _ in scalars['eval/roc_auc']] == [1, 2]
  history = [json.loads(line) for line in (tmp_path / 'test' / 'patient-scratch-32px-seed0' / 'metrics.jsonl')
             .read_text().splitlines()]
  assert scalars['eval/loss'] == [(r['epoch'], pytest.approx(r['validation_loss'])) for r in history]
  assert [s for s, _ in scalars['eval/overlays']] == [1, 2] and scalars['eval/overlays'][0][1] > 0
  per_epoch = np.mean([v for s, v in losses if s <= steps])
  assert history[0]['train_loss'] == pytest.approx(per_epoch, rel=1e-5)
  assert 'test/roc_auc' in scalars


def test_outputs_and_metrics(phantom_png, tmp_path):
  final = train_and_evaluate(config(phantom_png, tmp_path, epochs=2), progress=False)
  run = tmp_path / 'test' / 'patient-scratch-32px-seed0'
  for name in ('config.json', 'split.json', 'decision.json', 'metrics.json', 'metrics.jsonl', 'test_predictions.csv',
               'curves.png', 'confusion_matrix.png', 'roc.png', 'report.html'):
    assert (run / name).is_file(), name
  assert list((run / 'tensorboard').glob('events.out.tfevents.*'))
  metrics = json.loads((run / 'metrics.json').read_text())
  for key in ('accuracy', 'balanced_accuracy', 'roc_auc', 'sensitivity', 'specificity', 'precision', 'f1',
              'confusion_matrix', 'split', 'init', 'data', 'counts', 'confidence_95', 'validation', 'test',
              'selected_checkpoint'):
    assert key in metrics, key
  assert metrics['init'].startswith('scratch (random initialization')
  assert sum(map(sum, metrics['confusion_matrix'])) == metrics['counts']['test_slices']
  assert {k: metrics[k] for k in metrics['test']} == metrics['test']  # top-level keys are test's
  history = list(map(json.loads, (run / 'metrics.jsonl').read_text().splitlines()))
  assert [r['epoch'] for r in history] == [1, 2]  # epochs count from 1
  best = max(history, key=lambda r: r['validation_roc_auc'])
  assert metrics['selected_checkpoint']['epoch'] == best['epoch']
  assert metrics['selected_checkpoint']['value'] == pytest.approx(best['validation_roc_auc'])
  assert metrics['validation']['roc_auc'] == pytest.approx(best['validation_roc_auc'])  # the selected weights
  assert final['accuracy'] == metrics['accuracy']
  split = json.loads((run / 'split.json').read_text())
  assert set(split) == {'kind', 'seed', 'fold', 'data_fingerprint', 'train', 'validation', 'test'}
  assert split['data_fingerprint'] == metrics['data_fingerprint'] == json.loads((run / 'config.json').read_text())[
      'data_fingerprint']
  sides = [set(split[side]) for side in ('train', 'validation', 'test')]
  assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
  assert all(p.startswith('TCGA_') and p.count('_') == 2 for p in sides[2])
  with open(run / 'test_predictions.csv') as f:
    rows = list(csv.DictReader(f))
  assert {r['patient'] for r in rows} == sides[2] and len(rows) == metrics['counts']['test_slices']
  assert all((phantom_png / r['path']).is_file() for r in rows)
  assert json.loads((run / 'decision.json').read_text())['checkpoint'] == metrics['selected_checkpoint']['checkpoint']
  with pytest.raises(RunExistsError, match='--resume'):
    train_and_evaluate(config(phantom_png, tmp_path, epochs=2), progress=False)


def test_selection_happens_on_validation_never_on_test(phantom_tif, tmp_path, monkeypatch):
  """Catches a checkpoint picked on test: the per-epoch metrics must be computed on the validation
  indices only, and test must be evaluated exactly once, after training."""
  from jaxbrain.train import tasks
  seen = []

  class Spying(tasks.Classification):
    def __init__(self, config, data, split, progress):
      super().__init__(config, data, split, progress)
      seen.append(('split', tuple(split.validation), tuple(split.test)))

    def metrics(self, outputs, indices):
      seen.append(('metrics', tuple(indices)))
      return super().metrics(outputs, indices)

    def test_metrics(self, outputs, indices):
      seen.append(('final', tuple(indices)))
      return super().test_metrics(outputs, indices)

  monkeypatch.setitem(tasks.TASKS, 'classify', Spying)
  train_and_evaluate(config(phantom_tif, tmp_path, epochs=2), progress=False)
  (_, validation, test), calls = seen[0], seen[1:]
  assert [kind for kind, _ in calls] == ['metrics', 'metrics', 'metrics', 'final']
  assert all(indices == validation for kind, indices in calls if kind == 'metrics')
  assert calls[-1][1] == test


def _with_masks_moved(source: Path, target: Path, patients) -> Path:
  """A copy of the dataset where the tumor masks of `patients` move by half the image each way (labels
  unchanged; every tumor changes its cells)."""
  shutil.copytree(source, target)
  moved = [path for patient in patients for path in target.glob(f'{patient}_*/*_mask.png')]
  assert moved
  for path in moved:
    Image.fromarray(np.roll(np.asarray(Image.open(path)), (128, 128), axis=(0, 1))).save(path)
  return target


def test_the_mask_head_learns_from_training_masks_only(phantom_png, tmp_path):
  """Catches a joint loss that reads validation or test patients' masks: moving those masks must not
  change one trained weight. (That the masks it does read move the loss is
  tests/train/test_steps.py's check.)"""
  joint = functools.partial(bare, epochs=1, mask_head=True)
  train_and_evaluate(joint(phantom_png, tmp_path, run_name='original'), progress=False)
  split = json.loads((tmp_path / 'test' / 'original' / 'split.json').read_text())
  held_out = _with_masks_moved(phantom_png, tmp_path / 'held_out' / 'kaggle_3m', split['validation'] + split['test'])
  train_and_evaluate(joint(held_out, tmp_path, run_name='held_out'), progress=False)
  assert json.loads((tmp_path / 'test' / 'held_out' / 'split.json').read_text())['test'] == split['test']
  assert_same_state(final_state(tmp_path / 'test' / 'original'), final_state(tmp_path / 'test' / 'held_out'))


def test_resume_is_exact(phantom_png, tmp_path):
  """A finished 1-epoch run resumed with `epochs=2` ends where a 2-epoch run does, its history not
  repeated. Catches a resume that restarts the epoch count, re-runs epoch 1 or loses the optimizer state."""
  train_and_evaluate(bare(phantom_png, tmp_path, epochs=2, run_name='straight'), progress=False)
  train_and_evaluate(bare(phantom_png, tmp_path, epochs=1, run_name='resumed'), progress=False)
  train_and_evaluate(bare(phantom_png, tmp_path, epochs=2, run_name='resumed'), resume=True, progress=False)
  assert_same_state(final_state(tmp_path / 'test' / 'straight'), final_state(tmp_path / 'test' / 'resumed'))
  history = (tmp_path / 'test' / 'resumed' / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(r)['epoch'] for r in history] == [1, 2]


def test_tumor_share_trains_on_the_epochs_it_describes(phantom_png, tmp_path, monkeypatch):
  """With --tumor-share the runner trains on `epoch_order`'s slices: each step's rows come from it,
  in its order, and the logged schedule spans its steps. Catches the loop shuffling every training
  slice (the share ignored) and an epoch length taken from all training slices (steps past the drawn
  ones, a cosine schedule stretched over steps that never run)."""
  from jaxbrain.data import make_split
  from jaxbrain.data.batching import epoch_length, epoch_order
  from jaxbrain.train import fit, loop
  from jaxbrain.train.strategies import learning_rate_schedule

  fed = []
  original = fit.dispatch_rows
  monkeypatch.setattr(fit, 'dispatch_rows', lambda *args: fed.append(original(*args)) or fed[-1])
  run_config = bare(phantom_png, tmp_path, epochs=2, tumor_share=0.6, lr_schedule='cosine')
  train_and_evaluate(run_config, progress=False)
  data, _, _ = loop.prepare_data(run_config)
  train = make_split('patient', data.patient, data.label, seed=0).train
  steps = epoch_length(train, data.label, 0.6) // 4
  assert steps < len(train) // 4  # the phantom's natural share is below 0.6
  for epoch in range(2):
    np.testing.assert_array_equal(np.concatenate(fed[epoch * steps:(epoch + 1) * steps]),
                                  epoch_order(train, 0, epoch, data.label, 0.6)[:steps * 4])
  rates = tensorboard_scalars(tmp_path / 'test' / 'patient-scratch-32px-seed0' / 'tensorboard')['train/learning_rate']
  schedule = learning_rate_schedule(0.01, 'cosine', 2 * steps)
  np.testing.assert_allclose([r for _, r in rates], [schedule(s - 1) for s, _ in rates], rtol=1e-5)


@pytest.mark.parametrize('steps_per_dispatch, learning_rate', [(1, 0.01), (3, 1e-9)])
def test_loop_computes_what_a_plain_host_fed_loop_computes(phantom_png, tmp_path, steps_per_dispatch, learning_rate,
                                                           monkeypatch):
  """The runner (data on the device, steps dispatched one or three at a time, metrics summed on the
  device, prefetched inputs, asynchronous checkpoints as on accelerators) against the plainest loop: host batches, one
  jitted step at a time, every loss read at once. Catches a gather of other rows, a batch skipped,
  run twice or out of order by the dispatch plan, a scan that reuses a step's random key, losses put
  in the wrong TensorBoard step, and validation computed on other weights. Three steps per dispatch
  run with a vanishing learning rate: a scan compiles to other float roundings, which 32 px batches
  of 4 (BatchNorm over 4 values in the last stage) amplify within steps; the losses then still
  depend on each step's batch, flips and dropout, but not on the chaos of training."""
  import jax

  from jaxbrain.data import eval_batches, make_split, train_batches
  from jaxbrain.train.loop import prepare_data
  from jaxbrain.train.state import create_train_state
  from jaxbrain.train.tasks import build_task
  from jaxbrain.train import loop
  from jaxbrain.train.checkpoints import Checkpoints

  monkeypatch.setattr(loop, 'Checkpoints', functools.partial(Checkpoints, asynchronous=True))
  run_config = config(phantom_png, tmp_path, epochs=2, lr_schedule='cosine', learning_rate=learning_rate,
                      steps_per_dispatch=steps_per_dispatch)
  train_and_evaluate(run_config, progress=False)
  run_dir = tmp_path / 'test' / 'patient-scratch-32px-seed0'

  data, _, _ = prepare_data(run_config)
  split = make_split('patient', data.patient, data.label, seed=0)
  task = build_task(run_config, data, split)
  state = create_train_state(task.variables, task.tx, run_config.seed)
  train_step, eval_step = jax.jit(task.train_step), jax.jit(task.eval_step)
  losses, validation = [], []
  for epoch in range(2):
    for batch in train_batches(data, split.train, 4, run_config.seed, epoch):
      state, metrics = train_step(state, {'image': batch['image'], 'label': batch['label']})
      losses.append(float(metrics['loss']))
    outputs = [(eval_step(state, {'image': b['image']})['probability'], b['valid'])
               for b in eval_batches(data, split.validation, 4)]
    validation.append(task.metrics({'probability': np.concatenate([np.asarray(p)[v] for p, v in outputs])},
                                   split.validation))

  runner_losses = tensorboard_scalars(run_dir / 'tensorboard')['train/loss_per_step']
  assert [s for s, _ in runner_losses] == list(range(1, len(losses) + 1))
  assert len(losses) // 2 % steps_per_dispatch or steps_per_dispatch == 1  # the epochs end in single steps
  np.testing.assert_allclose([v for _, v in runner_losses], losses, rtol=2e-5, atol=1e-6)
  history = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]
  for record, expected in zip(history, validation):
    assert record['validation_roc_auc'] == pytest.approx(expected['roc_auc'], abs=1e-6)
    assert record['validation_accuracy'] == pytest.approx(expected['accuracy'], abs=1e-6)
  runner_state = final_state(run_dir)
  for collection in ('params', 'batch_stats'):
    for path, value in jax.tree_util.tree_leaves_with_path(getattr(state, collection)):
      name = f"['{collection}']{jax.tree_util.keystr(path)}"
      np.testing.assert_allclose(runner_state[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


def test_run_stopped_mid_epoch_resumes_exactly_with_several_steps_per_dispatch(phantom_png, tmp_path, monkeypatch):
  """A SIGTERM arriving mid-epoch stops the run at a dispatch boundary (checkpointed), and the
  resumed run makes the same dispatches as an uninterrupted one. Catches a checkpoint that lands
  inside a scanned dispatch, sums or losses lost across the stop, and a resume that re-plans the
  epoch's dispatches from the resume point."""
  from jaxbrain.train import Interrupted, fit

  train_and_evaluate(bare(phantom_png, tmp_path, epochs=1, steps_per_dispatch=3, run_name='straight'), progress=False)
  accumulate, calls = fit.accumulate, []

  def signalling(totals, metrics, before):
    calls.append(before)
    if len(calls) == 1:
      os.kill(os.getpid(), signal.SIGTERM)
    return accumulate(totals, metrics, before)

  monkeypatch.setattr(fit, 'accumulate', signalling)
  stopped = bare(phantom_png, tmp_path, epochs=1, steps_per_dispatch=3, run_name='stopped')
  with pytest.raises(Interrupted, match='epoch 1, batch 3;'):
    train_and_evaluate(stopped, progress=False)
  monkeypatch.setattr(fit, 'accumulate', accumulate)
  train_and_evaluate(stopped, resume=True, progress=False)
  assert_same_state(final_state(tmp_path / 'test' / 'straight'), final_state(tmp_path / 'test' / 'stopped'))
  for name in ('straight', 'stopped'):
    history = [json.loads(r) for r in (tmp_path / 'test' / name / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in history] == [1]
    if name == 'straight':
      straight = history
  assert [r['train_loss'] for r in history] == pytest.approx([r['train_loss'] for r in straight], rel=1e-6)


def launch(data_dir, workdir, run_name):
  args = [sys.executable, '-m', 'experiments.exp20', '--data-dir', str(data_dir), '--workdir', str(workdir),
          '--run-name', run_name, '--init', 'scratch', '--image-size', '32', '--batch-size', '4', '--epochs', '3',
          '--learning-rate', '0.01', '--ema-decay', '0.9', '--bootstrap-samples', '0', '--evals', '--no-progress',
          '--checkpoint-every-s', '0']  # a checkpoint every epoch: the kill comes after the first
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
  """Catches: a run killed (SIGKILL) or stopped (SIGTERM) mid-training that does not resume to the
  same final weights (and weight average: the runs keep one) as an uninterrupted one, or repeats an
  epoch in its history. The three runs start together (the two cores share them), then the two resumes."""
  args, reference = launch(phantom_tif, tmp_path, 'reference')
  killed_args, killed = launch(phantom_tif, tmp_path, 'killed')
  terminated_args, terminated = launch(phantom_tif, tmp_path, 'terminated')

  wait_for_first_epoch(killed, tmp_path / 'exp20' / 'killed')
  killed.send_signal(signal.SIGKILL)
  assert killed.wait() == -signal.SIGKILL
  assert not (tmp_path / 'exp20' / 'killed' / 'metrics.json').exists()
  wait_for_first_epoch(terminated, tmp_path / 'exp20' / 'terminated')
  terminated.send_signal(signal.SIGTERM)
  out = terminated.stdout.read()
  assert terminated.wait() == 130, out
  assert 'checkpoint saved' in out and '--resume' in out

  resumes = [subprocess.Popen(a + ['--resume'], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for a in (killed_args, terminated_args)]
  assert reference.wait() == 0, reference.stdout.read()
  outputs = [process.communicate()[0] for process in resumes]
  assert [process.returncode for process in resumes] == [0, 0], outputs
  assert 'resumed' in outputs[1] and 'batch 0' not in outputs[1].split('resumed')[1].splitlines()[0]

  want = final_state(tmp_path / 'exp20' / 'reference')
  assert any(name.startswith("['ema']") for name in want)
  for name in ('killed', 'terminated'):
    assert_same_state(want, final_state(tmp_path / 'exp20' / name))
    history = (tmp_path / 'exp20' / name / 'metrics.jsonl').read_text().splitlines()
    assert [json.loads(r)['epoch'] for r in history] == [1, 2, 3]


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


def test_feature_cache_is_refused_where_it_cannot_replay_training(phantom_png, tmp_path, capsys):
  """Catches a feature cache that silently drops augmentation it cannot replay (scale/rotation), or
  stays on with `--frozen-bn batch` (whose statistics change every step)."""
  with pytest.raises(ValueError, match='replays flips only'):
    train_and_evaluate(config(phantom_png, tmp_path, strategy='feature_extractor', preprocess='resize_flip_affine'),
                       progress=False)
  train_and_evaluate(config(phantom_png, tmp_path, strategy='feature_extractor', frozen_bn='batch', epochs=1),
                     progress=True)
  assert 'feature cache off: --frozen-bn batch' in capsys.readouterr().out
  header = json.loads((tmp_path / 'test' / 'patient-scratch-32px-seed0' / 'config.json').read_text())
  assert header['feature_cache'] is False and header['config']['task']['frozen_bn'] == 'batch'


class Killed(Exception):
  """Stands for a kill: raised into the loop by a test, between two checkpoint writes."""


def test_checkpoints_on_a_time_budget_resume_exactly_after_a_kill_between_writes(phantom_png, tmp_path, monkeypatch):
  """Writes come when the budget is spent (the loop's clock driven by the test: one tick per look),
  always at the end, each with the best state when it changed since the last write. The write
  after epoch 2 comes before epoch 2's validation is read (it is read while epoch 3 starts), and
  validation's scores are scripted so that epoch 2 is the best; the run is killed as epoch 4
  starts. Catches a run that writes every epoch regardless of the budget, a resume that does not
  validate first the state its checkpoint left unvalidated (epoch 2's best lost: another checkpoint
  selected), and final weights that differ from an uninterrupted run's."""
  import collections
  import itertools

  from jaxbrain.train import fit, tasks

  def clock():  # looks: 0 at the start, 1 after epoch 1, 2 after epoch 2 (due: write, then 3), 4 after epoch 3
    ticks = itertools.count()
    return lambda: float(next(ticks))

  scripted, now, validating = {0: 0.5, 1: 0.9, 2: 0.6, 3: 0.7}, {}, collections.deque()
  order, metrics, dispatched = fit.epoch_order, tasks.Classification.metrics, fit._dispatched

  def epoch_order(train, seed, epoch, *rest):
    if now.get('kill') == epoch:
      raise Killed
    return order(train, seed, epoch, *rest)

  def queued(state, epoch, *rest):  # each epoch's validation is read after it is queued, in order
    validating.append(epoch)
    return dispatched(state, epoch, *rest)

  def scripted_metrics(self, *args):  # the epoch whose validation is read (after the loop: the last one's)
    now['validated'] = validating.popleft() if validating else now['validated']
    return {**metrics(self, *args), 'roc_auc': scripted[now['validated']]}

  monkeypatch.setattr(fit, 'epoch_order', epoch_order)
  monkeypatch.setattr(fit, '_dispatched', queued)
  monkeypatch.setattr(tasks.Classification, 'metrics', scripted_metrics)
  runs = tmp_path / 'test'
  monkeypatch.setattr(fit, '_clock', clock())
  train_and_evaluate(bare(phantom_png, tmp_path, epochs=4, checkpoint_every_s=1.5, keep_checkpoints=3, run_name='straight'),
                     progress=False)
  written = sorted(int(p.name) for p in (runs / 'straight' / 'checkpoints' / 'last').iterdir() if p.name.isdigit())
  steps_per_epoch = written[-1] // 4
  assert written == [2 * steps_per_epoch, 4 * steps_per_epoch]

  monkeypatch.setattr(fit, '_clock', clock())
  now['kill'] = 3
  killed = bare(phantom_png, tmp_path, epochs=4, checkpoint_every_s=1.5, keep_checkpoints=3, run_name='killed')
  with pytest.raises(Killed):
    train_and_evaluate(killed, progress=False)
  assert not list((runs / 'killed' / 'checkpoints' / 'best').glob(str(2 * steps_per_epoch)))  # epoch 2's best unwritten
  del now['kill']
  validating.clear()
  train_and_evaluate(killed, resume=True, progress=False)
  assert_same_state(final_state(runs / 'straight'), final_state(runs / 'killed'))
  chosen = [json.loads((runs / name / 'metrics.json').read_text())['selected_checkpoint'] for name in ('straight', 'killed')]
  assert chosen[0] == chosen[1] and chosen[0]['epoch'] == 2 and chosen[0]['checkpoint'] == f'best/{2 * steps_per_epoch}'


def test_metrics_are_read_less_often_when_steps_are_short(phantom_png, tmp_path, monkeypatch):
  """The training metrics are read every FETCH_EVERY steps only when that many steps took
  FETCH_SECONDS: with steps taken as instant (a huge FETCH_SECONDS) an epoch is read once, at its
  end; with FETCH_SECONDS 0, every FETCH_EVERY steps; the two runs end with the same weights and
  the same logged losses. Catches a read every FETCH_EVERY steps whatever their length (a host
  round trip every few milliseconds on a GPU) and losses lost between rarer reads."""
  from jaxbrain.train import fit

  reads, original = [], fit._fetched_sums
  monkeypatch.setattr(fit, '_fetched_sums', lambda totals, **kw: reads.append(kw['batch']) or original(totals, **kw))
  monkeypatch.setattr(fit, 'FETCH_EVERY', 2)  # the phantom's epoch is a few steps
  counts = {}
  for name, seconds in (('rare', 1e9), ('often', 0.0)):
    monkeypatch.setattr(fit, 'FETCH_SECONDS', seconds)
    reads.clear()
    train_and_evaluate(bare(phantom_png, tmp_path, epochs=1, run_name=name), progress=False)
    counts[name] = list(reads)
  steps = counts['rare'][-1]
  assert steps > 2 * fit.FETCH_EVERY and counts['rare'] == [steps]
  assert counts['often'] == [*range(fit.FETCH_EVERY, steps, fit.FETCH_EVERY), steps]
  assert_same_state(final_state(tmp_path / 'test' / 'rare'), final_state(tmp_path / 'test' / 'often'))
  logged = [tensorboard_scalars(tmp_path / 'test' / name / 'tensorboard')['train/loss_per_step'] for name in ('rare', 'often')]
  assert logged[0] == logged[1] and len(logged[0]) == steps


# A run's test evaluation interrupted by SIGTERM, as `timeout` sends it: the experiment's own entry
# point, its test evaluation first sending the signal to its own process.
STOPPED_IN_TEST = '''
import os, signal, sys
from jaxbrain.train import loop
evaluate = loop.evaluate_selected
def stopped(*args, **kwargs):
  os.kill(os.getpid(), signal.SIGTERM)
  return evaluate(*args, **kwargs)
loop.evaluate_selected = stopped
from experiments.common import main
from experiments.configs import EXPERIMENTS
main(EXPERIMENTS['exp20'], sys.argv[1:])
'''


@pytest.mark.slow
def test_a_run_stopped_in_its_test_evaluation_says_how_to_finish_and_is_refused_until_then(phantom_png, tmp_path,
                                                                                            capsys):
  """Catches a run stopped (SIGTERM) during its test evaluation that dies printing nothing (no
  command to finish it), a `predict` that uses such a run (no decision.json: its decisions would be
  guesses) instead of refusing it in one line naming the run and that command, a printed command
  that does not finish the run, and the resume saying "at epoch 2" of a 1-epoch run or "min in all"
  for the minutes since it resumed."""
  from jaxbrain import cli
  args = ['--data-dir', str(phantom_png), '--workdir', str(tmp_path), '--run-name', 'stopped', '--init', 'scratch',
          '--image-size', '32', '--batch-size', '4', '--epochs', '1', '--bootstrap-samples', '0', '--evals',
          '--no-progress']
  stopped = subprocess.run([sys.executable, '-c', STOPPED_IN_TEST, *args], cwd=ROOT, capture_output=True, text=True)
  assert stopped.returncode == 130, stopped.stdout + stopped.stderr
  run = tmp_path / 'exp20' / 'stopped'
  said = stopped.stderr.strip().splitlines()[-1]
  assert str(run) in said and 'finish it with: ' in said
  command = said.split('finish it with: ')[1]
  assert command.startswith('python -m experiments.exp20 ') and command.endswith(' --resume')
  assert not (run / 'decision.json').exists()

  predicting = ['predict', str(phantom_png), '--run', str(run), '--out', str(tmp_path / 'pred'), '--no-progress']
  assert cli.main(predicting) == 2
  refused = capsys.readouterr().err.strip().splitlines()
  assert len(refused) == 1 and str(run) in refused[0] and 'unfinished' in refused[0] and command in refused[0]
  finished = subprocess.run(command.replace('python ', f'{sys.executable} ', 1), shell=True, cwd=ROOT,
                            capture_output=True, text=True)
  assert finished.returncode == 0, finished.stdout + finished.stderr
  assert 'after its last epoch (1)' in finished.stdout and 'at epoch 2' not in finished.stdout
  assert 'min since the resume' in finished.stdout and 'min in all' not in finished.stdout
  assert (run / 'decision.json').is_file()
  assert cli.main(predicting) == 0


def test_a_run_keeps_by_default_what_resume_and_predict_need_and_says_its_size(phantom_png, tmp_path, capsys):
  """Catches a run keeping several last checkpoints by default (a newcomer's first hour left about
  730 MB), and a run that ends without saying how much disk it holds and how to keep more."""
  train_and_evaluate(bare(phantom_png, tmp_path, epochs=3, checkpoint_every_s=0, run_name='r'), progress=False)
  run = tmp_path / 'test' / 'r'
  assert [len(list((run / 'checkpoints' / kind).iterdir())) for kind in ('best', 'last')] == [1, 1]
  said = capsys.readouterr().out
  assert f'MB in {run}' in said and '--keep-checkpoints N keeps' in said


def test_the_tensorboard_hint_says_how_to_get_it_where_it_is_missing(tmp_path, monkeypatch):
  """Catches the run's closing "next:" lines naming a `tensorboard` command that is not installed
  (it is no dependency: the runs write its files without it) without saying how to get it."""
  from jaxbrain.folders import RunDir
  from jaxbrain.train import finish
  run = RunDir(tmp_path / 'run')
  monkeypatch.setattr(finish.shutil, 'which', lambda name: None)
  assert finish.tensorboard_command(run) == f'pip install tensorboard && tensorboard --logdir {run.tensorboard}'
  monkeypatch.setattr(finish.shutil, 'which', lambda name: f'/usr/bin/{name}')
  assert finish.tensorboard_command(run) == f'tensorboard --logdir {run.tensorboard}'
