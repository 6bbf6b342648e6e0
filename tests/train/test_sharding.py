"""The data-parallel step on 8 (emulated CPU) devices equals the 1-device step, and 2 processes x 2
devices joined by jax.distributed equal 1 process on 4 devices, on the same global batches."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def environment(devices: int) -> dict:
  return {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}', 'JAX_PLATFORMS': 'cpu'}


def run_on(devices: int, phantom: Path, out: Path, *flags: str) -> dict:
  subprocess.run([sys.executable, '-m', 'tests.train.sharded_steps', str(phantom), str(out), *flags], cwd=ROOT,
                 env=environment(devices), check=True)
  return dict(np.load(out))


UPDATE_TOLERANCE = 0.03  # of the updates' norm
LOSS_TOLERANCE = 0.02


def assert_same(result: dict, reference: dict):
  """Equal up to float rounding. Reductions (BatchNorm statistics, gradient sums) run in another
  order across devices, and a ResNet from scratch at this learning rate amplifies that to well
  under 1% of its updates; the variant with per-device statistics is off by a third of them, a
  sum instead of a mean of the gradients by several times them. So the updates (final minus
  initial values) are compared relative to their norm, not the parameters themselves (which lr
  1e-4 would leave equal to their initial values whatever the reduction)."""
  np.testing.assert_allclose(result.pop('losses'), reference.pop('losses'), rtol=LOSS_TOLERANCE)
  assert result.keys() == reference.keys() and len(reference) > 100
  difference = np.sqrt(sum(np.sum((result[k] - reference[k]) ** 2) for k in reference))
  norm = np.sqrt(sum(np.sum(reference[k] ** 2) for k in reference))
  assert difference <= UPDATE_TOLERANCE * norm, f'updates differ by {difference / norm:.1%} of their norm'


@pytest.fixture(scope='module')
def one_device(phantom_tif, tmp_path_factory):
  result = run_on(1, phantom_tif, tmp_path_factory.mktemp('one') / 'one.npz')
  assert int(result.pop('devices')) == 1 and int(result.pop('processes')) == 1
  return result


def test_eight_devices_match_one(one_device, phantom_tif, tmp_path):
  eight = run_on(8, phantom_tif, tmp_path / 'eight.npz')
  assert int(eight.pop('devices')) == 8 and int(eight.pop('processes')) == 1
  assert_same(eight, dict(one_device))


def test_tolerance_rejects_per_device_batchnorm_statistics(one_device, phantom_tif, tmp_path):
  """Catches a data-parallel step whose BatchNorm normalizes each device's share of the batch
  alone (or any reduction as wrong): with the learning rate and steps `sharded_steps` uses, that
  variant, computed on one device, falls outside the tolerance the 8-device run must meet."""
  broken = run_on(1, phantom_tif, tmp_path / 'broken.npz', '--per-device-bn', '8')
  broken.pop('devices'), broken.pop('processes')
  with pytest.raises(AssertionError):
    assert_same(broken, dict(one_device))


@pytest.mark.slow
def test_two_processes_match_one(one_device, phantom_tif, tmp_path):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  out = tmp_path / 'multi.npz'
  processes = [subprocess.Popen([sys.executable, '-m', 'tests.train.sharded_steps', str(phantom_tif), str(out),
                                 '--coordinator',
                                 f'127.0.0.1:{port}', '--num-processes', '2', '--process-id', str(i)],
                                cwd=ROOT, env=environment(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(2)]
  for process in processes:
    try:
      output, _ = process.communicate(timeout=170)
    except subprocess.TimeoutExpired:
      for p in processes:
        p.kill()
      pytest.fail('multi-process run timed out')
    assert process.returncode == 0, output[-3000:]
  multi = dict(np.load(out))
  assert int(multi.pop('devices')) == 4 and int(multi.pop('processes')) == 2
  four = run_on(4, phantom_tif, tmp_path / 'four.npz')
  assert int(four.pop('devices')) == 4 and int(four.pop('processes')) == 1
  assert_same(dict(multi), four)
  assert_same(multi, dict(one_device))


class _Device:
  process_index = 0

  def __init__(self, limit):
    self.limit = limit

  def memory_stats(self):
    return None if self.limit is None else {'bytes_limit': self.limit}


class _Mesh:
  def __init__(self, *limits):
    self.devices = np.array([_Device(limit) for limit in limits])


def test_data_stays_on_the_devices_only_where_it_fits():
  """Catches a dataset placed on an accelerator it would crowd out (over a quarter of its memory),
  and CPU devices (no reported limit, host memory) refused it."""
  from jaxbrain.train.sharding import RESIDENT_FRACTION, fits_on_devices
  assert fits_on_devices(10 ** 12, _Mesh(None))
  assert fits_on_devices(int(RESIDENT_FRACTION * 8e9), _Mesh(8e9, 16e9))
  assert not fits_on_devices(int(RESIDENT_FRACTION * 8e9) + 1, _Mesh(16e9, 8e9))


def test_resident_and_host_fed_steps_see_the_same_batch(monkeypatch):
  """Catches a gather on the device that takes other rows (or reorders them) than the host path."""
  import jax
  import jax.numpy as jnp

  from jaxbrain.train import sharding
  mesh = sharding.make_mesh()
  arrays = {'image': np.random.default_rng(0).integers(0, 255, (20, 6, 6, 3), dtype=np.uint8),
            'label': np.arange(20, dtype=np.int32)}
  step = lambda state, batch: (state + 1, {'label': batch['label'], 'pixels': jnp.sum(batch['image'], (1, 2, 3))})
  shardings = (sharding.replicated(mesh),) * 2
  resident = sharding.feed(step, mesh, arrays, shardings)
  monkeypatch.setattr(sharding, 'fits_on_devices', lambda nbytes, mesh: False)
  host_fed = sharding.feed(step, mesh, arrays, shardings)
  assert resident.resident and not host_fed.resident
  rows = np.array([7, 3, 19, 0])
  for fed in (resident, host_fed):
    state, outputs = fed(jnp.zeros(()), rows)
    outputs = jax.device_get(outputs)
    np.testing.assert_array_equal(outputs['label'], rows)
    np.testing.assert_array_equal(outputs['pixels'], arrays['image'][rows].sum((1, 2, 3)))


def test_an_array_two_steps_read_is_placed_once():
  """Catches the images copied to the devices twice, once for training and once for evaluation."""
  from jaxbrain.train import sharding
  mesh = sharding.make_mesh()
  images = np.zeros((4, 2, 2, 3), np.uint8)
  placed = {}
  step = lambda state, batch: (state, batch['image'].sum())
  sharding.feed(step, mesh, {'image': images, 'label': np.zeros(4, np.int32)}, (sharding.replicated(mesh),) * 2,
                placed=placed)
  sharding.feed(step, mesh, {'image': images}, sharding.replicated(mesh), placed=placed)
  assert len(placed) == 2 and placed[id(images)][0] is images


@pytest.mark.parametrize('resident', [True, False])
def test_several_steps_per_dispatch_equal_single_steps(resident, monkeypatch):
  """Catches a scanned dispatch that gathers the wrong batch for a step, runs the steps out of
  order, or threads the state wrongly between them (resident and host-fed)."""
  import jax
  import jax.numpy as jnp

  from jaxbrain.train import sharding
  if not resident:
    monkeypatch.setattr(sharding, 'fits_on_devices', lambda nbytes, mesh: False)
  mesh = sharding.make_mesh()
  arrays = {'value': np.arange(40, dtype=np.float32).reshape(20, 2)}
  step = lambda state, batch: (state * 0.5 + jnp.sum(batch['value']), {'seen': state})
  shardings = (sharding.replicated(mesh),) * 2
  single, scanned = sharding.feed(step, mesh, arrays, shardings), sharding.feed(step, mesh, arrays, shardings, steps=3)
  rows = np.array([[3, 1], [0, 19], [7, 7]])
  state, seen = jnp.float32(1.0), []
  for batch_rows in rows:
    state, metrics = single(state, batch_rows)
    seen.append(float(metrics['seen']))
  scanned_state, scanned_metrics = scanned(jnp.float32(1.0), rows)
  assert scanned.resident == resident and float(scanned_state) == float(state)
  np.testing.assert_array_equal(jax.device_get(scanned_metrics['seen']), seen)


def test_prefetched_keeps_order_raises_and_stops():
  """Catches prefetched inputs handed over out of order, a failing placement swallowed (the loop
  would hang or skip a batch), and a producer thread left running after the consumer stops."""
  import threading

  from jaxbrain.train.sharding import prefetched
  assert list(prefetched(lambda i=i: i * i for i in range(10))) == [i * i for i in range(10)]

  def failing(i):
    if i == 3:
      raise ValueError('bad batch 3')
    return i

  got = []
  with pytest.raises(ValueError, match='bad batch 3'):
    for value in prefetched(lambda i=i: failing(i) for i in range(10)):
      got.append(value)
  assert got == [0, 1, 2]
  calls = []
  iterator = prefetched((lambda i=i: calls.append(i) or i) for i in range(1000))
  assert next(iterator) == 0
  iterator.close()
  assert not any(t.name == 'jaxbrain-prefetch' for t in threading.enumerate()) and len(calls) < 10
