"""Training engine: config, state, pure steps, strategies, sharding, checkpoints, the runner."""
from jaxbrain.train.config import INITS, STRATEGIES, TrainConfig
from jaxbrain.train.loop import Interrupted, RunExistsError, train_and_evaluate
from jaxbrain.train.state import TrainState, create_train_state
