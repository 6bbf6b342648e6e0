"""Models are built with plugged-in kernels that change how, never what, they compute."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxbrain.models
from jaxbrain import kernels
from jaxbrain.kernels import xla_cpu
from jaxbrain.models import create_model, create_segmenter

PLATFORM_SPECIFIC = ('platform_dependent', 'custom_vjp', 'custom_jvp', 'default_backend', 'xla_cpu')


def test_model_modules_hold_no_platform_specific_code():
  """Catches a CPU rewrite (custom gradient, platform switch) in a model module instead of kernels/."""
  for path in Path(jaxbrain.models.__file__).parent.glob('*.py'):
    if path.name == 'build.py':  # resolves kernel names; it computes nothing
      continue
    text = path.read_text()
    assert not [word for word in PLATFORM_SPECIFIC if word in text], path.name


def _loss_and_grads(model, variables, x):
  def loss(params):
    out, _ = model.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'])
    return jnp.mean(jnp.square(out))
  return jax.value_and_grad(loss)(variables['params'])


def _uses_custom_gradients(model, variables, x) -> bool:
  return 'custom_vjp' in str(jax.make_jaxpr(lambda v: model.apply(v, x, train=True, mutable=['batch_stats']))(variables))


def test_the_resnet_encoder_of_a_unet_takes_the_kernels_too():
  """Catches a U-Net that builds its ResNet encoder without passing on its layer arguments: only the
  encoder's stem pools, so a custom-gradient pool shows up only when it is passed on."""
  pool_only = kernels.Kernels('pool only', kernels.XLA.conv, kernels.XLA.batch_normalize, xla_cpu.max_pool)
  x = jnp.zeros((2, 32, 32, 3))
  model = create_segmenter('resnet18', 4, kernels=pool_only)
  assert _uses_custom_gradients(model, jax.jit(model.init)(jax.random.key(0), x), x)


def test_the_resnet_takes_the_kernels():
  """Catches a ResNet that ignores its `conv`/`norm`/`pool` arguments (the jaxprs would be equal).
  Its values and gradients with either set are the kernels' own (tests/kernels); `bench/hlo.py`
  fingerprints the programs they compile to."""
  x = jnp.zeros((10, 32, 32, 3))
  reference, fast = (create_model('resnet18', kernels=k, num_classes=2) for k in ('xla', 'xla_cpu'))
  variables = jax.jit(reference.init)(jax.random.key(0), x[:1])
  assert _uses_custom_gradients(fast, variables, x) and not _uses_custom_gradients(reference, variables, x)


def test_cpu_kernels_give_the_reference_kernels_values_and_gradients():
  """The ResUNet takes the kernels as the ResNet does (catches a ResUNet ignoring its layer arguments:
  the jaxprs would be equal), and its XLA:CPU gradients equal autodiff's within float32 rounding
  (catches a rewritten gradient that is wrong in a real network)."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(10, 32, 32, 3)), jnp.float32)
  reference, fast = (create_segmenter('residual', 4, kernels=k) for k in ('xla', 'xla_cpu'))
  variables = jax.jit(reference.init)(jax.random.key(0), x[:1])
  assert _uses_custom_gradients(fast, variables, x) and not _uses_custom_gradients(reference, variables, x)
  (loss, grads), (loss_ref, grads_ref) = (jax.jit(lambda v: _loss_and_grads(model, v, x))(variables)
                                          for model in (fast, reference))
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads_ref))  # leaves that should be 0 hold rounding
  for ours, theirs in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=1e-4 * scale)


def test_flip_averaged_probability_is_the_mean_over_the_slice_and_its_mirror():
  """Catches test-time flip averaging that mirrors the wrong axis, averages logits instead of
  probabilities, or is ignored (a random network is not mirror-symmetric, so the three differ)."""
  model = create_model('resnet18', num_classes=2)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = model.init({'params': jax.random.key(0)}, x)
  plain = lambda images: jax.nn.softmax(model.apply(variables, images))[:, 1]
  averaged = model.apply(variables, x, True, method='probability')
  np.testing.assert_allclose(averaged, (plain(x) + plain(x[:, :, ::-1])) / 2, rtol=1e-6)
  assert not np.allclose(averaged, plain(x), rtol=1e-4)
  np.testing.assert_allclose(model.apply(variables, x, method='probability'), plain(x), rtol=1e-6)


def test_probability_with_the_mask_head_is_the_geometric_mean_of_the_two_heads():
  """Catches the mask head's score ignored, taken from the mean (not the largest) cell, mixed as an
  arithmetic mean or as logits, or left out of the mirrored view under flip averaging (a random
  network gives different values for each)."""
  model = create_model('resnet18', num_classes=2, mask_head=True)
  x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
  variables = model.init({'params': jax.random.key(0)}, x)

  def by_hand(images):
    logits, cells = model.apply(variables, images, with_mask=True)
    return jnp.sqrt(jax.nn.softmax(logits)[:, 1] * jax.nn.sigmoid(cells).max(axis=(1, 2)))

  joint = model.apply(variables, x, False, True, method='probability')
  np.testing.assert_allclose(joint, by_hand(x), rtol=1e-6)
  assert not np.allclose(joint, model.apply(variables, x, method='probability'), rtol=1e-4)
  np.testing.assert_allclose(model.apply(variables, x, True, True, method='probability'),
                             (by_hand(x) + by_hand(x[:, :, ::-1])) / 2, rtol=1e-6)
