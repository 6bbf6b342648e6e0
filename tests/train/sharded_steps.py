"""Runs a few fine-tune steps on phantom slices on the mesh of all (global) devices and saves
the losses and the updates (final minus initial value) of the params and BatchNorm statistics.

`--per-device-bn K` computes, on one device, what a broken data-parallel step over K devices
would: BatchNorm statistics of each device's share of the batch instead of the global batch (each
share stepped alone from the same state, the results averaged: for SGD with momentum that is the
mean of the per-share gradients). The test checks its tolerance rejects that.

Used by test_sharding in subprocesses: one process with XLA_FLAGS=--xla_force_host_platform_device_count=N,
or several processes joined by jax.distributed (`--coordinator ADDRESS --num-processes P --process-id I`).
"""
import argparse

import jax
import numpy as np

from jaxbrain.train import sharding
from jaxbrain.train.steps import make_train_step
from jaxbrain.data import Preprocessing, kaggle3m
from tests.train.helpers import setup

LEARNING_RATE = 0.01  # large enough that a wrong reduction (per-device statistics) exceeds the tolerance
STEPS = 2


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('phantom', help='a kaggle_3m tree; its first 24 slices make 3 global batches of 8')
  parser.add_argument('out')
  parser.add_argument('--coordinator')
  parser.add_argument('--num-processes', type=int)
  parser.add_argument('--process-id', type=int)
  parser.add_argument('--per-device-bn', type=int, default=0)
  args = parser.parse_args()
  sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
  model, tx, state = setup('finetune', lr=LEARNING_RATE, dropout_rate=0.0)  # no dropout or flips: the
  # per-device variant below must differ from the global step in its BatchNorm statistics alone
  initial = jax.tree.map(np.asarray, {'params': state.params, 'batch_stats': state.batch_stats})
  mesh = sharding.make_mesh()
  train_step = make_train_step(model, tx, Preprocessing(64, flip=False), frozen_backbone=False)
  state = sharding.replicate(state, mesh)
  losses = []
  records = kaggle3m.scan(args.phantom)[:8 * STEPS]
  slices = [kaggle3m.read_slice(r) for r in records]
  images = np.stack([image for image, _ in slices])
  labels = np.array([mask.any() for _, mask in slices], np.int32)
  step = sharding.feed(train_step, mesh, {'image': images, 'label': labels}, (sharding.replicated(mesh),) * 2,
                       donate_state=True)
  assert step.resident  # CPU devices take the data: the gather runs inside the sharded step
  for b in range(STEPS):
    batch = {'image': images[b * 8:(b + 1) * 8], 'label': labels[b * 8:(b + 1) * 8]}
    if args.per_device_bn:
      shares = [jax.tree.map(lambda x: x[k::args.per_device_bn], batch) for k in range(args.per_device_bn)]
      results = [jax.jit(train_step)(state, share) for share in shares]  # one device, the state not donated
      mean = lambda *leaves: sum(leaves) / len(leaves) if np.issubdtype(leaves[0].dtype, np.floating) else leaves[0]
      state = jax.tree.map(mean, *[r[0] for r in results])
      losses.append(float(np.mean([sharding.to_host(m)['loss'] for _, m in results])))
      continue
    state, metrics = step(state, np.arange(b * 8, (b + 1) * 8))
    losses.append(float(sharding.to_host(metrics)['loss']))
  tree = sharding.to_host({'params': state.params, 'batch_stats': state.batch_stats})
  updates = jax.tree.map(lambda new, old: np.asarray(new) - np.asarray(old), tree, initial)
  if jax.process_index() == 0:
    flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(updates)}
    np.savez(args.out, losses=np.array(losses), devices=mesh.size, processes=jax.process_count(), **flat)


if __name__ == '__main__':
  main()
