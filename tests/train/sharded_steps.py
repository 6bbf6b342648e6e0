"""Runs a few fine-tune steps on phantom slices on the mesh of all (global) devices and saves
losses and params.

Used by test_sharding in subprocesses: one process with XLA_FLAGS=--xla_force_host_platform_device_count=N,
or several processes joined by jax.distributed (`--coordinator ADDRESS --num-processes P --process-id I`).
"""
import argparse

import jax
import numpy as np

from jaxbrain.train import sharding
from jaxbrain.train.steps import make_train_step
from jaxbrain.data import Preprocess, kaggle3m
from tests.train.helpers import setup


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('phantom', help='a kaggle_3m tree; its first 24 slices make 3 global batches of 8')
  parser.add_argument('out')
  parser.add_argument('--coordinator')
  parser.add_argument('--num-processes', type=int)
  parser.add_argument('--process-id', type=int)
  args = parser.parse_args()
  sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
  model, tx, state = setup('finetune', lr=1e-4)  # the report's fine-tuning lr
  mesh = sharding.make_mesh()
  step = sharding.jit_train_step(make_train_step(model, tx, Preprocess(64), frozen_backbone=False), mesh)
  state = sharding.replicate(state, mesh)
  losses = []
  records = kaggle3m.scan(args.phantom)[:24]
  slices = [kaggle3m.read_slice(r) for r in records]
  images = np.stack([image for image, _ in slices])
  labels = np.array([mask.any() for _, mask in slices], np.int32)
  for b in range(3):
    batch = {'image': images[b * 8:(b + 1) * 8], 'label': labels[b * 8:(b + 1) * 8]}
    placed = sharding.shard_batch(batch, mesh, ('image', 'label'))
    assert len(placed['image'].sharding.device_set) == mesh.size
    state, metrics = step(state, placed)
    losses.append(float(sharding.to_host(metrics)['loss']))
  tree = sharding.to_host({'params': state.params, 'batch_stats': state.batch_stats})
  if jax.process_index() == 0:
    flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}
    np.savez(args.out, losses=np.array(losses), devices=mesh.size, processes=jax.process_count(), **flat)


if __name__ == '__main__':
  main()
