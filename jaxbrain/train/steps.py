"""Pure train/eval steps: `train_step(state, batch) -> (state, metrics)`, `eval_step(state, batch) -> outputs`.

Augmentation (flip, resize, normalize) runs inside the step on the accelerator, driven by the
state's rng: `step_key -> (flip key, dropout key)`. The cached-feature head step consumes the
same keys the same way, so training on the feature cache is the same computation as training
through the frozen backbone.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxbrain.data.transforms import Preprocessing, apply_preprocessing
from jaxbrain.inference import (PIXEL_LOGIT, features_probability, native_pixel_probability, segmenter_outputs,
                                slice_probability)
from jaxbrain.metrics import dice_from_counts
from jaxbrain.models.resnet import ResNet
from jaxbrain.train.state import TrainState


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The training loss of class logits [B, 2] against integer labels [B], on the device."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def all_finite(tree) -> jax.Array:
  """True when every leaf of `tree` is free of NaN and inf."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _update(state: TrainState, tx: optax.GradientTransformation, loss_fn: Callable, metrics_fn: Callable):
  """One optimizer step from `loss_fn(params) -> (loss, (logits, batch_stats))`; metrics from logits,
  and `finite`: whether the loss and the new weights and statistics are all finite (computed on
  the device, read with the metrics, so a diverging run stops without an extra host sync)."""
  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)
  finite = jnp.isfinite(loss) & all_finite((state.params, state.batch_stats))
  return state, {'loss': loss, **metrics_fn(logits), 'finite': finite}


def with_weight_average(train_step: Callable, decay: float) -> Callable:
  """`train_step`, then the state's moving average of the weights and BatchNorm statistics moves
  toward the new ones: ema <- d * ema + (1 - d) * new, with d = min(decay, (1 + t) / (10 + t)) after
  step t, so that a short run's average does not keep the random initialization."""

  def step(state: TrainState, batch: dict):
    state, metrics = train_step(state, batch)
    t = state.step.astype(jnp.float32)
    d = jnp.minimum(decay, (1 + t) / (10 + t))
    new = {'params': state.params, 'batch_stats': state.batch_stats}
    return state.replace(ema=jax.tree.map(lambda e, v: d * e + (1 - d) * v, state.ema, new)), metrics

  return step


def _accuracy(labels: jax.Array) -> Callable:
  return lambda logits: {'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}


def tumor_cells(masks: jax.Array, cells: tuple[int, int]) -> jax.Array:
  """Masks [B, S, S] -> [B, h, w] float: 1 where a cell of (S/h, S/w) pixels holds any tumor pixel
  (the mask head's target; S a multiple of the cell counts)."""
  batch, size = masks.shape[0], masks.shape[1]
  (h, w) = cells
  return masks.reshape(batch, h, size // h, w, size // w).max(axis=(2, 4)).astype(jnp.float32)


def make_train_step(model: ResNet, tx: optax.GradientTransformation, preprocessing: Preprocessing,
                    frozen_backbone: bool, frozen_bn: str = 'running', mask_loss_weight: float = 0.0) -> Callable:
  """Images [B, H, W, 3] uint8 + labels [B] -> one SGD step on cross-entropy.

  A frozen backbone gets no gradient; `frozen_bn` says which BatchNorm statistics it uses
  (`ResNet.__call__`). `mask_loss_weight > 0` (a model with `mask_head`, masks [B, H, W] in the
  batch) adds that times the binary cross-entropy of the mask head's per-cell logits against
  `tumor_cells` of the (flipped, resized) masks: the joint loss.
  """
  joint = mask_loss_weight > 0

  def train_step(state: TrainState, batch: dict):
    flip_key, dropout_key = jax.random.split(state.step_key())
    images, masks = apply_preprocessing(preprocessing, flip_key, batch['image'], batch['mask'] if joint else None,
                                        train=True)

    def loss_fn(params):
      variables = {'params': params, 'batch_stats': state.batch_stats}
      if frozen_backbone and frozen_bn == 'running':  # running statistics, never updated
        logits = model.apply(variables, images, train=True, frozen_backbone=True, rngs={'dropout': dropout_key})
        batch_stats = state.batch_stats
      elif frozen_backbone:  # batch statistics, running ones updated (PyTorch's train mode)
        logits, updated = model.apply(variables, images, train=True, frozen_backbone=True, frozen_bn='batch',
                                      rngs={'dropout': dropout_key}, mutable=['batch_stats'])
        batch_stats = updated['batch_stats']
      else:
        logits, updated = model.apply(variables, images, train=True, with_mask=joint, rngs={'dropout': dropout_key},
                                      mutable=['batch_stats'])
        batch_stats = updated['batch_stats']
      if not joint:
        return softmax_cross_entropy(logits, batch['label']), (logits, batch_stats)
      logits, mask_logits = logits
      mask_loss = optax.sigmoid_binary_cross_entropy(mask_logits, tumor_cells(masks, mask_logits.shape[1:])).mean()
      return softmax_cross_entropy(logits, batch['label']) + mask_loss_weight * mask_loss, (logits, batch_stats)

    return _update(state, tx, loss_fn, _accuracy(batch['label']))

  return train_step


def make_head_train_step(model: ResNet, tx: optax.GradientTransformation) -> Callable:
  """Cached features [B, F] (or [B, 2, F]: original, flipped) + labels [B] -> one step of the head."""

  def head_train_step(state: TrainState, batch: dict):
    flip_key, dropout_key = jax.random.split(state.step_key())
    features = batch['features']
    if features.ndim == 3:  # the same Bernoulli draw random_hflip makes for the images
      flip = jax.random.bernoulli(flip_key, 0.5, (features.shape[0],))
      features = jnp.where(flip[:, None], features[:, 1], features[:, 0])

    def loss_fn(params):
      variables = {'params': params, 'batch_stats': state.batch_stats}
      logits = model.apply(variables, features, train=True, method='classify', rngs={'dropout': dropout_key})
      return softmax_cross_entropy(logits, batch['label']), (logits, state.batch_stats)

    return _update(state, tx, loss_fn, _accuracy(batch['label']))

  return head_train_step


def make_eval_step(model: ResNet, preprocessing: Preprocessing, flip_average: bool = False,
                   with_mask_head: bool = False) -> Callable:
  """Images -> {'probability' [B] of tumor}: `inference.slice_probability` of the state's inference variables."""

  def eval_step(state: TrainState, batch: dict):
    return {'probability': slice_probability(model, state.inference_variables(), preprocessing, batch['image'],
                                             flip_average, with_mask_head)}

  return eval_step


def make_head_eval_step(model: ResNet) -> Callable:
  """Cached features [B, F] -> the same outputs as `make_eval_step`."""

  def head_eval_step(state: TrainState, batch: dict):
    return {'probability': features_probability(model, state.inference_variables(), batch['features'])}

  return head_eval_step


def segmentation_loss(logits: jax.Array, masks: jax.Array, smooth: float = 1.0) -> jax.Array:
  """Binary cross-entropy + soft Dice over the whole batch (logits, masks: [B, H, W]).

  Batch-level soft Dice stays defined when most slices have empty masks; `smooth` keeps an
  all-empty batch at loss ~0 for a confident empty prediction.
  """
  bce = optax.sigmoid_binary_cross_entropy(logits, masks).mean()
  probabilities = jax.nn.sigmoid(logits)
  soft_dice = dice_from_counts(jnp.sum(probabilities * masks), jnp.sum(probabilities), jnp.sum(masks), smooth=smooth)
  return bce + 1 - soft_dice


def make_segmentation_train_step(model, tx: optax.GradientTransformation, preprocessing: Preprocessing) -> Callable:
  """Images [B, H, W, 3] uint8 + masks [B, H, W] -> one step on BCE + soft Dice; flips both together.
  With deep supervision the loss is the weighted mean of the output's and the decoder levels'
  (weights 1, 1/2, 1/4, ...: the output's counts most)."""

  def train_step(state: TrainState, batch: dict):
    flip_key, _ = jax.random.split(state.step_key())
    images, masks = apply_preprocessing(preprocessing, flip_key, batch['image'], batch['mask'], train=True)

    def loss_fn(params):
      logits, updated = model.apply({'params': params, 'batch_stats': state.batch_stats}, images, train=True,
                                    mutable=['batch_stats', 'intermediates'])
      loss = segmentation_loss(logits, masks)
      deep = updated.get('intermediates', {}).get('deep_logits', ())[::-1]  # sown deepest first
      if deep:
        weights = [0.5 ** k for k in range(1, len(deep) + 1)]
        loss = (loss + sum(w * segmentation_loss(l, masks) for w, l in zip(weights, deep))) / (1 + sum(weights))
      return loss, (logits, updated['batch_stats'])

    def batch_dice(logits):
      predicted = (logits > PIXEL_LOGIT).astype(masks.dtype)
      return {'dice': dice_from_counts(jnp.sum(predicted * masks), jnp.sum(predicted), jnp.sum(masks), smooth=1.0)}

    return _update(state, tx, loss_fn, batch_dice)

  return train_step


def make_segmentation_eval_step(model, preprocessing: Preprocessing) -> Callable:
  """Images [B, 256, 256, C] -> `inference.segmenter_outputs` of the state's inference variables."""

  def eval_step(state: TrainState, batch: dict):
    return segmenter_outputs(model, state.inference_variables(), preprocessing, batch['image'])

  return eval_step


def make_native_probability_step(model, preprocessing: Preprocessing, flip_average: bool) -> Callable:
  """Images [B, 256, 256, C] -> {'native_probability' [B, 256, 256]}: `inference.native_pixel_probability`,
  from which a segmentation run chooses its post-processing on validation."""

  def native_step(state: TrainState, batch: dict):
    return {'native_probability': native_pixel_probability(model, state.inference_variables(), preprocessing,
                                                           batch['image'], flip_average)}

  return native_step
