"""Checkpoints: what is restored is the state at the save, also when written in the background."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbrain.train.checkpoints import Checkpoints
from jaxbrain.train.state import TrainState


def state_at(step: int, value: float) -> TrainState:
  return TrainState(step=jnp.asarray(step, jnp.int32), params={'w': jnp.full((64, 64), value)}, batch_stats={},
                    opt_state={'m': jnp.full((64,), value)}, rng=jnp.zeros(2, jnp.uint32))


@pytest.mark.parametrize('asynchronous', [True, False])
def test_saved_state_is_the_state_at_the_call(tmp_path, asynchronous):
  """In both writing modes, with the next step donating the saved state's buffers: catches the
  best checkpoint not written or overwritten by a later save, and a state or progress restored
  from another step than the one saved."""
  checkpoints = Checkpoints(tmp_path, keep=2, asynchronous=asynchronous)
  donating_step = jax.jit(lambda s: s.replace(step=s.step + 1, params={'w': s.params['w'] * 0 + 7.0}),
                          donate_argnums=0)
  state = state_at(1, 3.0)
  checkpoints.save(state, {'epoch': 1, 'batch': 0})
  checkpoints.save_best(state, {'epoch': 1, 'batch': 0})
  state = donating_step(state)  # overwrites the buffers in place where the backend donates
  checkpoints.save(state, {'epoch': 2, 'batch': 0})
  best, progress = checkpoints.restore(state_at(0, 0.0), which='best')
  last, _ = checkpoints.restore(state_at(0, 0.0))
  checkpoints.close()
  assert progress == {'epoch': 1, 'batch': 0} and int(best.step) == 1
  np.testing.assert_array_equal(best.params['w'], np.full((64, 64), 3.0))
  assert int(last.step) == 2 and float(last.params['w'][0, 0]) == 7.0
