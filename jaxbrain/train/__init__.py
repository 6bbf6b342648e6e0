"""Training engine: state, pure steps, strategies, tasks, sharding, checkpoints, the runner."""
from jaxbrain.train.loop import Interrupted, RunExistsError, train_and_evaluate
from jaxbrain.train.state import TrainState, create_train_state
