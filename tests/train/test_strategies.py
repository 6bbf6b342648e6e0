"""Feature extractor freezes the backbone exactly; fine-tune moves everything; the cache is exact."""
import jax
import numpy as np
import pytest

from jaxbrain.data import SliceArrays
from jaxbrain.train.steps import make_head_train_step, make_train_step
from jaxbrain.train.strategies import cache_features, param_labels
from tests.train.helpers import PREPROCESS, batches, setup


def run(step, state, data):
  step = jax.jit(step)
  losses = []
  for batch in data:
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  return state, losses


def leaves(tree):
  return jax.tree_util.tree_leaves_with_path(tree)


def test_labels_by_path():
  _, _, state = setup('feature_extractor')
  labels = param_labels(state.params, frozen_backbone=True)
  assert set(jax.tree.leaves(labels['backbone'])) == {'frozen'}
  assert set(jax.tree.leaves(labels['head'])) == {'trainable'}
  assert set(jax.tree.leaves(param_labels(state.params, frozen_backbone=False))) == {'trainable'}


def test_feature_extractor_leaves_backbone_bit_identical():
  model, tx, state = setup('feature_extractor')
  new, _ = run(make_train_step(model, tx, PREPROCESS, frozen_backbone=True), state, batches(3))
  for (path, before), after in zip(leaves(state.params['backbone']), jax.tree.leaves(new.params['backbone'])):
    np.testing.assert_array_equal(before, after, err_msg=str(path))
  for before, after in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(new.batch_stats)):
    np.testing.assert_array_equal(before, after)
  for (path, before), after in zip(leaves(state.params['head']), jax.tree.leaves(new.params['head'])):
    assert not np.array_equal(before, after), path
  # frozen leaves carry no optimizer state (set_to_zero is stateless)
  momentum_leaves = sum(x.size for x in jax.tree.leaves(new.opt_state))
  assert momentum_leaves == sum(x.size for x in jax.tree.leaves(state.params['head']))


def test_frozen_backbone_with_batch_statistics_is_pytorchs_train_mode():
  """`--frozen-bn batch`: the backbone's weights stay bit-identical (no gradient, no update), but its
  BatchNorm normalizes with batch statistics and updates the running ones, as a PyTorch backbone
  with requires_grad=False in model.train() does. Catches a 'batch' mode that still uses the
  running statistics (the first loss would equal the 'running' mode's) or leaves them unchanged."""
  model, tx, state = setup('feature_extractor', dropout_rate=0.0)
  data = batches(2)
  new, losses = run(make_train_step(model, tx, PREPROCESS, frozen_backbone=True, frozen_bn='batch'), state, data)
  for (path, before), after in zip(leaves(state.params['backbone']), jax.tree.leaves(new.params['backbone'])):
    np.testing.assert_array_equal(before, after, err_msg=str(path))
  for (path, before), after in zip(leaves(state.batch_stats), jax.tree.leaves(new.batch_stats)):
    assert not np.array_equal(before, after), path
  _, running_losses = run(make_train_step(model, tx, PREPROCESS, frozen_backbone=True), state, data[:1])
  assert losses[0] != running_losses[0]
  # the first loss is the loss of the model in training mode (batch statistics) on the batch
  from jaxbrain.data import apply_preprocessing
  from jaxbrain.train.steps import softmax_cross_entropy
  flip_key, _ = jax.random.split(state.step_key())
  images, _ = apply_preprocessing(PREPROCESS, flip_key, data[0]['image'], train=True)
  logits, _ = model.apply({'params': state.params, 'batch_stats': state.batch_stats}, images, train=True,
                          mutable=['batch_stats'])
  assert losses[0] == pytest.approx(float(softmax_cross_entropy(logits, data[0]['label'])), rel=1e-5)


def test_finetune_changes_every_parameter_and_statistic():
  model, tx, state = setup('finetune')
  new, losses = run(make_train_step(model, tx, PREPROCESS, frozen_backbone=False), state, batches(3))
  for (path, before), after in zip(leaves(state.params), jax.tree.leaves(new.params)):
    assert not np.array_equal(before, after), path
  for (path, before), after in zip(leaves(state.batch_stats), jax.tree.leaves(new.batch_stats)):
    assert not np.array_equal(before, after), path
  assert int(new.step) == 3 and all(np.isfinite(losses))


def test_feature_cache_gives_the_same_head_updates():
  model, tx, state = setup('feature_extractor')
  data = batches(3)
  through_backbone, losses = run(make_train_step(model, tx, PREPROCESS, frozen_backbone=True), state, data)

  images = np.concatenate([b['image'] for b in data])
  labels = np.concatenate([b['label'] for b in data])
  n = len(labels)
  arrays = SliceArrays(image=images, mask=np.zeros(images.shape[:3], np.uint8), label=labels,
                       patient=np.array(['p'] * n), institution=np.array(['x'] * n), slice=np.arange(n),
                       path=np.array([f'p/p_{i}.png' for i in range(n)]))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  features_fn = jax.jit(lambda x: model.apply(variables, x, method='features'))
  cached = cache_features(features_fn, arrays, np.arange(n), PREPROCESS, batch_size=5, with_flipped=True)
  assert cached.shape == (n, 2, 512)
  feature_batches = [{'features': cached[i * 8:(i + 1) * 8], 'label': b['label']} for i, b in enumerate(data)]
  from_cache, cache_losses = run(make_head_train_step(model, tx), state, feature_batches)

  np.testing.assert_allclose(cache_losses, losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(from_cache.params), jax.tree.leaves(through_backbone.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)
