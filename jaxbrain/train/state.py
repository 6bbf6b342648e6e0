"""The train state: a pure pytree of arrays (no functions), so orbax saves and restores it as is."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
  """step, params, batch_stats, optimizer state and the run's base rng (raw uint32 key data).

  Each step derives its randomness as `fold_in(rng, step)`, so a restored state continues
  with exactly the randomness an uninterrupted run would have used.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array

  def step_key(self) -> jax.Array:
    return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)


def create_train_state(variables: dict, tx: optax.GradientTransformation, seed: int) -> TrainState:
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get('batch_stats', {}),
                    opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(seed)))
