"""Data parallelism with `jax.sharding`: one Mesh axis 'data' over all devices, the batch split
along it, params and state replicated, and a single jitted step (no pmap). The dataset is placed on
the devices once where it fits (`feed`): a step then receives only row indices and gathers its batch.

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


# The dataset lives on the devices when it takes at most this share of the smallest device's memory
# (the rest is the model, optimizer state and activations); above it, batches are fed from the host.
RESIDENT_FRACTION = 0.25


def fits_on_devices(nbytes: int, mesh: Mesh) -> bool:
  """Whether `nbytes` of data may be kept on every device of `mesh` (replicated): at most
  RESIDENT_FRACTION of the smallest device memory JAX reports; CPU devices, which report none and
  whose memory is the host's, always take it."""
  limits = [(d.memory_stats() or {}).get('bytes_limit') for d in mesh.devices.flat if d.process_index ==
            jax.process_index()]
  return all(limit is None or nbytes <= RESIDENT_FRACTION * limit for limit in limits)


def feed(step: Callable, mesh: Mesh, arrays: dict, out_shardings, donate_state: bool = False,
         placed: dict | None = None) -> Callable:
  """`step(state, batch)` as `fed(state, rows)`: the batch is rows `rows` [B] of `arrays` (host NumPy
  arrays of one length).

  When the arrays fit on the devices they are placed there once, replicated, and each call sends
  only the rows, sharded along 'data': the gather runs inside the jitted step. Otherwise the rows
  are gathered on the host and the batch copied in, split along 'data'. Either way the step sees
  the same batch. `fed.resident` says which. Feeds given one `placed` dict share their device
  copies: an array two steps read (the images, for training and evaluation) is placed once.
  """
  donate = (0,) if donate_state else ()
  if fits_on_devices(sum(np.asarray(v).nbytes for v in arrays.values()), mesh):
    placed = {} if placed is None else placed
    for value in arrays.values():
      if id(value) not in placed:
        placed[id(value)] = (value, replicate(value, mesh))  # the host array is kept so its id stays unique
    resident = {k: placed[id(v)][1] for k, v in arrays.items()}
    gathered = jax.jit(lambda state, data, rows: step(state, {k: v[rows] for k, v in data.items()}),
                       in_shardings=(replicated(mesh), replicated(mesh), data_sharding(mesh)),
                       out_shardings=out_shardings, donate_argnums=donate)

    def fed(state, rows):
      return gathered(state, resident, shard_batch({'rows': np.asarray(rows, np.int32)}, mesh)['rows'])
    fed.resident = True
  else:
    jitted = jax.jit(step, in_shardings=(replicated(mesh), data_sharding(mesh)), out_shardings=out_shardings,
                     donate_argnums=donate)

    def fed(state, rows):
      return jitted(state, shard_batch({k: np.asarray(v)[rows] for k, v in arrays.items()}, mesh))
    fed.resident = False
  return fed


def to_host(tree):
  """Fetches (possibly sharded, possibly multi-process) arrays as full NumPy arrays."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, tree)
