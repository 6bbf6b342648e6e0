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
import queue
import threading
from typing import Callable, Iterable, Iterator

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


def data_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
  """Split along 'data' on `axis` (1 for a stack of batches [K, B, ...]), whole along the others."""
  return NamedSharding(mesh, P(*(None,) * axis, DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def process_slice(global_size: int) -> slice:
  """This process's rows of a global batch: every process reads the same global batch order and
  feeds only its own contiguous share (the one its local devices hold)."""
  if global_size % jax.process_count():
    raise ValueError(f'global batch {global_size} does not split across {jax.process_count()} processes')
  local = global_size // jax.process_count()
  return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def shard_batch(batch: dict, mesh: Mesh, axis: int = 0) -> dict:
  """Places a global batch (host NumPy arrays of one length along `axis`, the same on every
  process) on the mesh, split along 'data'; each process transfers only its own share."""
  sharding = data_sharding(mesh, axis)
  placed = {}
  for name, value in batch.items():
    value = np.asarray(value)
    rows = (slice(None),) * axis + (process_slice(value.shape[axis]),)
    placed[name] = jax.make_array_from_process_local_data(sharding, value[rows], value.shape)
  return placed


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


class Fed:
  """A step fed by row indices (`feed`): `fed(state, rows)`, or `fed.run(state, fed.put(rows))` to
  place the next rows (`put`, e.g. on a prefetching thread) while the current step runs."""

  def __init__(self, resident: bool, put: Callable, run: Callable):
    self.resident, self.put, self.run = resident, put, run

  def __call__(self, state, rows):
    return self.run(state, self.put(rows))


def feed(step: Callable, mesh: Mesh, arrays: dict, out_shardings, donate_state: bool = False,
         placed: dict | None = None, steps: int = 1) -> Fed:
  """`step(state, batch)` fed by `rows` [B] of `arrays` (host NumPy arrays of one length).

  When the arrays fit on the devices they are placed there once, replicated, and each call sends
  only the rows, sharded along 'data': the gather runs inside the jitted step. Otherwise the rows
  are gathered on the host and the batch copied in, split along 'data'. Either way the step sees
  the same batch. `fed.resident` says which. Feeds given one `placed` dict share their device
  copies: an array two steps read (the images, for training and evaluation) is placed once.

  `steps` > 1: rows [steps, B] run `steps` consecutive steps in one dispatch (`lax.scan`), their
  outputs stacked along a new leading axis, so that short steps are not bound by launches.
  """
  donate = (0,) if donate_state else ()
  axis = 0 if steps == 1 else 1
  run = step if steps == 1 else lambda state, batches: jax.lax.scan(step, state, batches)
  if fits_on_devices(sum(np.asarray(v).nbytes for v in arrays.values()), mesh):
    placed = {} if placed is None else placed
    for value in arrays.values():
      if id(value) not in placed:
        placed[id(value)] = (value, replicate(value, mesh))  # the host array is kept so its id stays unique
    resident = {k: placed[id(v)][1] for k, v in arrays.items()}
    gathered = jax.jit(lambda state, data, rows: run(state, {k: v[rows] for k, v in data.items()}),
                       in_shardings=(replicated(mesh), replicated(mesh), data_sharding(mesh, axis)),
                       out_shardings=out_shardings, donate_argnums=donate)
    return Fed(True, lambda rows: shard_batch({'rows': np.asarray(rows, np.int32)}, mesh, axis)['rows'],
               lambda state, rows: gathered(state, resident, rows))
  jitted = jax.jit(run, in_shardings=(replicated(mesh), data_sharding(mesh, axis)), out_shardings=out_shardings,
                   donate_argnums=donate)
  return Fed(False, lambda rows: shard_batch({k: np.asarray(v)[rows] for k, v in arrays.items()}, mesh, axis), jitted)


def prefetched(puts: Iterable[Callable[[], object]], depth: int = 2) -> Iterator:
  """The results of `puts` (thunks placing one dispatch's input), computed `depth` ahead on a
  background thread, in order; an exception in a thunk is raised here. Closing the iterator (or
  leaving the loop) stops the thread."""
  results: queue.Queue = queue.Queue(depth)
  stop = threading.Event()
  done = object()

  def produce():
    try:
      for put in puts:
        if stop.is_set():
          return
        results.put((put(), None))
    except BaseException as e:  # noqa: BLE001 -- handed to the consumer
      results.put((None, e))
    results.put((done, None))

  thread = threading.Thread(target=produce, daemon=True, name='jaxbrain-prefetch')
  thread.start()
  try:
    while True:
      value, error = results.get()
      if error is not None:
        raise error
      if value is done:
        return
      yield value
  finally:
    stop.set()
    while thread.is_alive():  # unblock a producer waiting on a full queue
      try:
        results.get(timeout=0.05)
      except queue.Empty:
        pass


def to_host(tree):
  """Fetches (possibly sharded, possibly multi-process) arrays as full NumPy arrays."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, tree)
