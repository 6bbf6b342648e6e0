"""The train state: a pure pytree of arrays (no functions), so orbax saves and restores it as is."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
  """step, params, batch_stats, optimizer state, the run's base rng (raw uint32 key data) and,
  when the run averages its weights, `ema`: the moving average of {'params', 'batch_stats'}.

  Each step derives its randomness as `fold_in(rng, step)`, so a restored state continues
  with exactly the randomness an uninterrupted run would have used.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  ema: Any = None

  def step_key(self) -> jax.Array:
    return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)

  def inference_variables(self) -> dict:
    """The variables that evaluate and predict: the moving average when there is one."""
    return self.ema if self.ema is not None else {'params': self.params, 'batch_stats': self.batch_stats}


def create_train_state(variables: dict, tx: optax.GradientTransformation, seed: int,
                       weight_average: bool = False) -> TrainState:
  """The state at step 0; `weight_average`: with `ema` starting at the initial variables."""
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  # A copy: the step donates the state's buffers, and one buffer cannot be donated twice.
  ema = jax.tree.map(jnp.copy, {'params': params, 'batch_stats': batch_stats}) if weight_average else None
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(seed)), ema=ema)
