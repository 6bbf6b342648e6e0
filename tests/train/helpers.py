"""Small models, states and batches shared by the training tests."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxbrain.data import Preprocessing
from jaxbrain.models import create_model
from jaxbrain.train.state import create_train_state
from jaxbrain.train.strategies import make_optimizer

SIZE = 32


def setup(strategy, seed=0, lr=0.05, dropout_rate=0.25):
  model = create_model('resnet18', num_classes=2, head_hidden=(32, 16), dropout_rate=dropout_rate)
  variables = model.init({'params': jax.random.key(seed)}, jnp.zeros((1, SIZE, SIZE, 3)))
  tx = make_optimizer(variables['params'], lr, 0.5, frozen_backbone=strategy == 'feature_extractor')
  return model, tx, create_train_state(variables, tx, seed)


def batches(n, batch_size=8, seed=0):
  rng = np.random.default_rng(seed)
  return [{'image': rng.integers(0, 255, (batch_size, SIZE, SIZE, 3), dtype=np.uint8),
           'label': rng.integers(0, 2, batch_size).astype(np.int32)} for _ in range(n)]


PREPROCESS = Preprocessing(size=SIZE, flip=True, normalize=True)
