"""Training engine: state, pure steps, strategies, tasks, sharding, checkpoints, the runner."""
from jaxbrain.train.fit import Interrupted, NonFiniteError
from jaxbrain.train.guard import RunExistsError
from jaxbrain.train.loop import train_and_evaluate
from jaxbrain.train.state import TrainState, create_train_state

__all__ = [
  'Interrupted',
  'NonFiniteError',
  'RunExistsError',
  'TrainState',
  'create_train_state',
  'train_and_evaluate',
]
