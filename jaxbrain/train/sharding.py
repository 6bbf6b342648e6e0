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


def shard_batch(batch: dict, mesh: Mesh, keys: tuple[str, ...]) -> dict:
  """Places this process's part of a global batch (host NumPy) on the mesh, split along 'data'."""
  sharding = data_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in keys}


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
