"""The two transfer-learning strategies: optimizer partition by parameter path, and the feature cache.

Feature extractor: parameters under `backbone/` get `optax.set_to_zero()` (big_vision's way of
freezing), the head gets SGD; the backbone runs on its running statistics behind a stop_gradient.
Fine-tune: every parameter gets SGD and BatchNorm runs in training mode.
"""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np
import optax

from jaxbrain.data.batching import eval_batches
from jaxbrain.data.arrays import SliceArrays
from jaxbrain.data.transforms import Preprocessing, apply_preprocessing

FROZEN, TRAINABLE = 'frozen', 'trainable'


def param_labels(params, frozen_backbone: bool):
  """'frozen' for every leaf under `backbone/` when the backbone is frozen (the feature-extractor
  strategy), else 'trainable'."""
  def label(path, _):
    top = path[0].key if hasattr(path[0], 'key') else str(path[0])
    return FROZEN if frozen_backbone and top == 'backbone' else TRAINABLE
  return jax.tree_util.tree_map_with_path(label, params)


def learning_rate_schedule(learning_rate: float, schedule: str, total_steps: int) -> optax.ScalarOrSchedule:
  """The learning rate as optax takes it: a constant number (no schedule state), or step -> cosine
  decay to 0 over `total_steps`."""
  if schedule == 'cosine':
    return optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
  return learning_rate


def make_optimizer(params, learning_rate: optax.ScalarOrSchedule, momentum: float, optimizer: str = 'sgd',
                   weight_decay: float = 0.0, frozen_backbone: bool = False) -> optax.GradientTransformation:
  """SGD with momentum (or Adam) at `learning_rate` (a number or a `learning_rate_schedule`) on
  trainable leaves; a frozen backbone's leaves get zero updates and no state. `weight_decay` adds
  L2 decay (as PyTorch's SGD `weight_decay`) to the trainable leaves.
  """
  trainable = optax.adam(learning_rate) if optimizer == 'adam' else optax.sgd(learning_rate, momentum=momentum or None)
  if weight_decay:
    trainable = optax.chain(optax.add_decayed_weights(weight_decay), trainable)
  return optax.partition({TRAINABLE: trainable, FROZEN: optax.set_to_zero()}, param_labels(params, frozen_backbone))


def cache_features(features_fn: Callable, data: SliceArrays, indices: np.ndarray, preprocessing: Preprocessing,
                   batch_size: int, with_flipped: bool, progress: bool = False) -> np.ndarray:
  """Pooled features of the frozen backbone for `indices`: [N, F], or [N, 2, F] with the
  horizontally flipped copy of each image second, so random-flip training on the cache is exact.

  `features_fn(images)` maps preprocessed float images to features; it is jitted here together
  with the preprocessing.
  """
  evaluation = Preprocessing(preprocessing.size, flip=False, normalize=preprocessing.normalize)
  embed = jax.jit(lambda images: features_fn(apply_preprocessing(evaluation, None, images)[0]))  # one program per batch
  views = (False, True) if with_flipped else (False,)
  batches = eval_batches(data, indices, batch_size)
  if progress:
    from tqdm import tqdm
    batches = tqdm(batches, total=-(-len(indices) // batch_size), desc='caching features', unit='batch')
  out = []
  for batch in batches:
    per_view = []
    for flipped in views:
      images = batch['image'][:, :, ::-1] if flipped else batch['image']
      per_view.append(np.asarray(embed(images)))
    out.append(np.stack(per_view, 1)[batch['valid']])
  features = np.concatenate(out)
  return features if with_flipped else features[:, 0]
