import jax
import jax.numpy as jnp
import numpy as np

from jaxbrain.models import create_model


def test_bfloat16_compute_keeps_float32_weights_and_statistics():
  """bfloat16 logits stay within 5% of the float32 logits' scale (bfloat16 keeps 8 bits of mantissa,
  under 1% per operation). Catches an absolute tolerance that passes anything when logits are small,
  and a compute path that loses more precision than bfloat16 (e.g. statistics or weights cast down)."""
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  full = create_model('resnet18', num_classes=2)
  half = create_model('resnet18', num_classes=2, dtype=jnp.bfloat16)
  variables = full.init(jax.random.key(1), x)
  assert {leaf.dtype for leaf in jax.tree.leaves(half.init(jax.random.key(1), x))} == {jnp.dtype('float32')}
  logits32 = full.apply(variables, x)
  logits16, updated = half.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits16.dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(updated)} == {jnp.dtype('float32')}
  scale = np.abs(np.asarray(logits32)).max()
  assert scale > 0.1
  assert np.abs(np.asarray(half.apply(variables, x)) - np.asarray(logits32)).max() <= 0.05 * scale
