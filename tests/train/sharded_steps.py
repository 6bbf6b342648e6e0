"""Runs a few fine-tune steps on the mesh of all visible devices and saves losses and params.

Used by test_sharding with XLA_FLAGS=--xla_force_host_platform_device_count=N in a subprocess.
"""
import sys

import jax
import numpy as np

from jaxbrain.train import sharding
from jaxbrain.train.steps import make_train_step
from tests.train.helpers import PREPROCESS, batches, setup


def main(out: str) -> None:
  model, tx, state = setup('finetune', lr=1e-3)  # a small fine-tuning lr, as in the report
  mesh = sharding.make_mesh()
  step = sharding.jit_train_step(make_train_step(model, tx, PREPROCESS, frozen_backbone=False), mesh)
  state = sharding.replicate(state, mesh)
  losses = []
  for batch in batches(3, batch_size=8):
    placed = sharding.shard_batch(batch, mesh, ('image', 'label'))
    assert len(placed['image'].sharding.device_set) == mesh.size
    state, metrics = step(state, placed)
    losses.append(float(metrics['loss']))
  flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(
      {'params': state.params, 'batch_stats': state.batch_stats})}
  np.savez(out, losses=np.array(losses), devices=mesh.size, **flat)


if __name__ == '__main__':
  main(sys.argv[1])
