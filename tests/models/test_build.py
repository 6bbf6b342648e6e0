"""Models are built with plugged-in kernels that change how, never what, they compute."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbrain.models
from jaxbrain.models import create_model, create_segmenter

PLATFORM_SPECIFIC = ('platform_dependent', 'custom_vjp', 'custom_jvp', 'default_backend', 'xla_cpu')


def test_model_modules_hold_no_platform_specific_code():
  """Catches a CPU rewrite (custom gradient, platform switch) creeping back into a model module."""
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


@pytest.mark.parametrize('build', [
    lambda kernels: create_model('resnet18', kernels=kernels, num_classes=2),
    lambda kernels: create_segmenter('residual', 4, kernels=kernels),
    lambda kernels: create_segmenter('resnet18', 4, kernels=kernels)], ids=['resnet18', 'resunet', 'resnet-unet'])
def test_cpu_kernels_give_the_reference_kernels_values_and_gradients(build):
  """Every model takes the kernels the same way: the ResUNet's own blocks too (catches a model that
  ignores its `conv`/`norm`/`pool` arguments: then the jaxprs would be equal) and the XLA:CPU
  gradients equal autodiff's within float32 rounding (catches a wrong rewritten gradient)."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(10, 32, 32, 3)), jnp.float32)
  reference, fast = build('xla'), build('xla_cpu')
  variables = reference.init(jax.random.key(0), x[:1])
  forward = lambda model: str(jax.make_jaxpr(lambda v: model.apply(v, x, train=True, mutable=['batch_stats']))(
      variables))
  assert 'custom_vjp' in forward(fast) and 'custom_vjp' not in forward(reference)
  (loss, grads), (loss_ref, grads_ref) = _loss_and_grads(fast, variables, x), _loss_and_grads(reference, variables, x)
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads_ref))  # leaves that should be 0 hold rounding
  for ours, theirs in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=1e-4 * scale)
