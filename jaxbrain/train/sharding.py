"""Data parallelism with `jax.sharding`: one Mesh axis 'data' over all devices, the batch split
along it, params and state replicated, and a single jitted step (no pmap).

Multi-host: call `initialize_distributed()` (or set JAXBRAIN_DISTRIBUTED=1) before anything else
touches JAX; `jax.distributed.initialize()` then auto-detects Slurm, Open MPI or TPU/GKE, or takes
the coordinator address, process count and id explicitly. The mesh then spans all global devices
and each process feeds its own share of every global batch.
"""
from __future__ import annotations

import os
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, force: bool = False) -> bool:
  """Starts JAX's multi-controller runtime when asked (arguments, `force`, or JAXBRAIN_DISTRIBUTED=1)."""
  asked = force or coordinator_address is not None or os.environ.get('JAXBRAIN_DISTRIBUTED') == '1'
  if asked:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  return asked


def make_mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def process_slice(global_size: int) -> slice:
  """This process's rows of a global batch: every process reads the same global batch order and
  feeds only its own contiguous share (the one its local devices hold)."""
  if global_size % jax.process_count():
    raise ValueError(f'global batch {global_size} does not split across {jax.process_count()} processes')
  local = global_size // jax.process_count()
  return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Places a global batch (host NumPy arrays of one length, the same on every process) on the mesh,
  split along 'data'; each process transfers only its own share."""
  sharding = data_sharding(mesh)
  rows = process_slice(len(next(iter(batch.values()))))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)[rows]) for k, v in batch.items()}


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))


def jit_train_step(step: Callable, mesh: Mesh) -> Callable:
  """`step(state, batch)` jitted with the state replicated (and donated) and the batch data-sharded."""
  return jax.jit(step, in_shardings=(replicated(mesh), data_sharding(mesh)),
                 out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0)


def jit_eval_step(step: Callable, mesh: Mesh) -> Callable:
  return jax.jit(step, in_shardings=(replicated(mesh), data_sharding(mesh)), out_shardings=data_sharding(mesh))


def to_host(tree):
  """Fetches (possibly sharded, possibly multi-process) arrays as full NumPy arrays."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, tree)
