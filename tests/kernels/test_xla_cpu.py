"""The XLA:CPU kernels compute the reference kernels' values (and PyTorch's), with their own gradients."""
import flax.linen as nn
import jax
import numpy as np
import pytest
import torch

from jaxbrain import kernels
from jaxbrain.kernels.xla_cpu import WEIGHT_GRADIENT_CHUNK, batch_normalize, max_pool
from jaxbrain.kernels.xla_cpu import conv as conv_general_dilated

NHWC = ('NHWC', 'HWIO', 'NHWC')
CASES = [((2, 16, 16, 4), 3, 2, 1), ((2, 9, 11, 3), 3, 2, 1), ((1, 10, 7, 2), 2, 2, 0), ((1, 8, 8, 3), 3, 1, 1)]


def _inputs(shape, ties: bool, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(np.float32)
  return np.round(x).clip(0) if ties else x  # ties: many equal maxima in a window (post-ReLU zeros)


@pytest.mark.parametrize('shape,window,stride,padding', CASES)
@pytest.mark.parametrize('ties', [False, True])
def test_max_pool_matches_flax_and_its_gradient_picks_the_same_maxima(shape, window, stride, padding, ties):
  x = _inputs(shape, ties)
  reference = lambda v: nn.max_pool(v, (window, window), strides=(stride, stride), padding=((padding, padding),) * 2)
  y_ref, vjp_ref = jax.vjp(reference, x)
  y, vjp = jax.vjp(lambda v: max_pool(v, window, stride, padding), x)
  np.testing.assert_array_equal(y, y_ref)
  # integer cotangents make every sum exact, so any difference is a different choice of maximum
  cotangent = np.random.default_rng(1).integers(-4, 5, size=y.shape).astype(np.float32)
  np.testing.assert_array_equal(vjp(cotangent)[0], vjp_ref(cotangent)[0])


@pytest.mark.parametrize('ties', [False, True])
def test_max_pool_gradient_matches_pytorch(ties):
  x = _inputs((2, 12, 13, 3), ties, seed=2)
  y, vjp = jax.vjp(lambda v: max_pool(v, 3, 2, 1), x)
  cotangent = np.random.default_rng(3).integers(-4, 5, size=y.shape).astype(np.float32)
  x_torch = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
  y_torch = torch.nn.functional.max_pool2d(x_torch, 3, 2, 1)
  y_torch.backward(torch.tensor(cotangent.transpose(0, 3, 1, 2)))
  np.testing.assert_array_equal(y, y_torch.detach().numpy().transpose(0, 2, 3, 1))
  np.testing.assert_array_equal(vjp(cotangent)[0], x_torch.grad.numpy().transpose(0, 2, 3, 1))


def test_max_pool_is_not_lowered_to_select_and_scatter():
  x = np.zeros((2, 16, 16, 4), np.float32)
  grad = jax.jit(jax.grad(lambda v: max_pool(v, 3, 2, 1).sum()))
  assert 'select-and-scatter' not in grad.lower(x).as_text(dialect='hlo')
  reference = jax.jit(jax.grad(lambda v: nn.max_pool(v, (3, 3), (2, 2), ((1, 1), (1, 1))).sum()))
  assert 'select-and-scatter' in reference.lower(x).as_text(dialect='hlo')


def _bn_inputs(seed=0, shape=(4, 9, 7, 16)):
  rng = np.random.default_rng(seed)
  x = rng.normal(2.0, 3.0, size=shape).astype(np.float32)
  scale, bias = (rng.normal(size=shape[-1]).astype(np.float32) for _ in range(2))
  return x, scale, bias, rng


def test_batch_normalize_gradient_is_autodiff_of_the_same_formula():
  x, scale, bias, rng = _bn_inputs()

  outputs, vjp = jax.vjp(lambda *a: batch_normalize(*a, 1e-5), x, scale, bias)
  reference, vjp_reference = jax.vjp(lambda *a: kernels.batch_normalize(*a, 1e-5), x, scale, bias)
  for ours, theirs in zip(outputs, reference):
    np.testing.assert_array_equal(ours, theirs)
  # cotangents on the batch moments too (the running statistics never receive one in training)
  cotangents = tuple(rng.normal(size=o.shape).astype(np.float32) for o in outputs)
  for ours, theirs in zip(vjp(cotangents), vjp_reference(cotangents)):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())


def test_batch_normalize_gradient_matches_pytorch():
  x, scale, bias, rng = _bn_inputs(seed=1)
  grad_y = rng.normal(size=x.shape).astype(np.float32)
  (y, _, _), vjp = jax.vjp(lambda *a: batch_normalize(*a, 1e-5), x, scale, bias)
  grads = vjp((grad_y, np.zeros_like(scale), np.zeros_like(scale)))
  x_t, scale_t, bias_t = (torch.tensor(a, requires_grad=True) for a in (x.transpose(0, 3, 1, 2), scale, bias))
  y_t = torch.nn.functional.batch_norm(x_t, None, None, scale_t, bias_t, training=True, eps=1e-5)
  y_t.backward(torch.tensor(grad_y.transpose(0, 3, 1, 2)))
  np.testing.assert_allclose(y, y_t.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
  for ours, theirs in zip(grads, (x_t.grad.numpy().transpose(0, 2, 3, 1), scale_t.grad.numpy(), bias_t.grad.numpy())):
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())


def _lax_conv(x, w, strides=(1, 1)):
  pads = [(k // 2, k // 2) for k in w.shape[:2]]
  return jax.lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('x_shape,w_shape,strides,custom', [
    ((2, 7, 7, 512), (3, 3, 512, 512), (1, 1), True),     # ResNet layer4 at 224 px
    ((2, 4, 6, 256), (5, 5, 256, 320), (1, 1), True),     # non-square map, 5x5, in != out
    ((2, 14, 14, 256), (3, 3, 256, 256), (1, 1), False),  # larger map: lax's gradient
    ((2, 8, 8, 512), (3, 3, 512, 512), (2, 2), False),    # strided: lax's gradient
    ((2, 7, 7, 64), (3, 3, 64, 64), (1, 1), False),       # small kernel: lax's gradient
])
def test_conv_general_dilated_is_lax_with_a_faster_input_gradient_on_small_maps(x_shape, w_shape, strides, custom):
  rng = np.random.default_rng(4)
  x = rng.normal(size=x_shape).astype(np.float32)
  w = (rng.normal(size=w_shape) / np.sqrt(np.prod(w_shape[:3]))).astype(np.float32)
  conv = nn.Conv(w_shape[-1], w_shape[:2], strides, padding=[(k // 2, k // 2) for k in w_shape[:2]], use_bias=False,
                 conv_general_dilated=conv_general_dilated)
  ours = lambda x, w: conv.apply({'params': {'kernel': w}}, x)
  assert ('custom_vjp' in str(jax.make_jaxpr(ours)(x, w))) == custom
  (y, vjp), (y_ref, vjp_ref) = jax.vjp(ours, x, w), jax.vjp(lambda x, w: _lax_conv(x, w, strides), x, w)
  np.testing.assert_array_equal(y, y_ref)
  cotangent = rng.normal(size=y.shape).astype(np.float32)
  for ours_grad, reference in zip(vjp(cotangent), vjp_ref(cotangent)):
    np.testing.assert_allclose(ours_grad, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def _ops(fn, *args) -> str:
  return jax.jit(fn).lower(*args).as_text(dialect='hlo')


def test_auto_picks_the_cpu_kernels_here_and_xla_keeps_xla_gradients():
  """'auto' on this CPU backend is xla_cpu; 'xla' keeps XLA's own gradients (select-and-scatter, the
  convolution with a reversed kernel), which a GPU runs as cuDNN's kernels. Catches 'auto' resolving
  to the wrong set, and a rewrite leaking into the reference kernels."""
  assert kernels.get('auto') is kernels.get('xla_cpu') and kernels.get('xla') is kernels.XLA
  x = np.zeros((2, 16, 16, 4), np.float32)
  assert 'select-and-scatter' in _ops(jax.grad(lambda v: kernels.max_pool(v, 3, 2, 1).sum()), x)
  assert 'select-and-scatter' not in _ops(jax.grad(lambda v: max_pool(v, 3, 2, 1).sum()), x)
  args = np.zeros((2, 7, 7, 512), np.float32), np.zeros((3, 3, 512, 512), np.float32)
  plain = _ops(jax.grad(lambda x, w: kernels.XLA.conv(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=NHWC).sum()),
               *args)
  rewritten = _ops(jax.grad(lambda x, w: conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)],
                                                              dimension_numbers=NHWC).sum()), *args)
  assert 'reverse(' in plain and ' dot(' not in plain
  assert ' dot(' in rewritten and 'convolution(' not in rewritten
  with pytest.raises(ValueError, match='unknown kernels'):
    kernels.get('cudnn')


@pytest.mark.parametrize('x_shape,w_shape', [((2, 7, 7, 256), (3, 3, 256, 256)),   # small-map input gradient
                                           ((12, 6, 6, 16), (3, 3, 16, 16))])    # chunked weight gradient
def test_rewritten_gradients_keep_bfloat16(x_shape, w_shape):
  rng = np.random.default_rng(5)
  x = rng.normal(size=x_shape).astype(np.float32)
  w = (rng.normal(size=w_shape) / np.sqrt(np.prod(w_shape[:3]))).astype(np.float32)
  conv = lambda x, w: conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=NHWC)
  loss = lambda x, w: conv(x, w).astype(np.float32).sum()
  grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
  x16, w16 = x.astype(jax.numpy.bfloat16), w.astype(jax.numpy.bfloat16)
  grads = grad_fn(x16, w16)
  for ours, reference in zip(grads, jax.grad(loss, argnums=(0, 1))(x, w)):
    assert ours.dtype == jax.numpy.bfloat16
    np.testing.assert_allclose(ours.astype(np.float32), reference, rtol=0.05, atol=0.02 * np.abs(reference).max())


@pytest.mark.parametrize('x_shape,w_shape,strides,padding', [
    ((20, 12, 12, 16), (3, 3, 16, 24), (1, 1), [(1, 1), (1, 1)]),  # 3 chunks, the last one short
    ((20, 12, 12, 16), (3, 3, 16, 24), (2, 2), [(1, 1), (1, 1)]),
    ((20, 12, 12, 16), (1, 1, 16, 24), (2, 2), [(0, 0), (0, 0)]),
    ((17, 20, 20, 3), (7, 7, 3, 8), (2, 2), [(3, 3), (3, 3)]),       # ResNet stem
])
def test_weight_gradient_summed_over_chunks_of_the_batch(x_shape, w_shape, strides, padding):
  rng = np.random.default_rng(6)
  x, w = rng.normal(size=x_shape).astype(np.float32), rng.normal(size=w_shape).astype(np.float32)
  ours = lambda x, w: conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)
  assert 'custom_vjp' in str(jax.make_jaxpr(ours)(x, w))
  (y, vjp), (y_ref, vjp_ref) = jax.vjp(ours, x, w), jax.vjp(lambda x, w: _lax_conv(x, w, strides), x, w)
  np.testing.assert_array_equal(y, y_ref)
  cotangent = rng.normal(size=y.shape).astype(np.float32)
  (grad_x, grad_w), (grad_x_ref, grad_w_ref) = vjp(cotangent), vjp_ref(cotangent)
  np.testing.assert_array_equal(grad_x, grad_x_ref)
  np.testing.assert_allclose(grad_w, grad_w_ref, rtol=1e-5, atol=1e-5 * np.abs(grad_w_ref).max())
  reference = lambda x, w: kernels.XLA.conv(x, w, strides, padding, dimension_numbers=NHWC)
  convolutions = lambda conv: _ops(jax.grad(lambda w: conv(x, w).sum()), w).count(' convolution(')
  assert convolutions(ours) == 3 and convolutions(reference) == 1  # one per chunk, or XLA's one


def test_batches_of_one_chunk_are_plain_lax():
  x, w = np.ones((WEIGHT_GRADIENT_CHUNK, 12, 12, 16), np.float32), np.ones((3, 3, 16, 24), np.float32)
  conv = lambda x, w: conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=NHWC)
  jaxpr = str(jax.make_jaxpr(conv)(x, w))
  assert 'custom_vjp' not in jaxpr


def test_no_dimension_numbers_means_lax_default_layout():
  rng = np.random.default_rng(7)
  x, w = rng.normal(size=(12, 256, 7, 7)).astype(np.float32), rng.normal(size=(256, 256, 3, 3)).astype(np.float32)
  args = (1, 1), [(1, 1), (1, 1)]
  np.testing.assert_array_equal(conv_general_dilated(x, w, *args), jax.lax.conv_general_dilated(x, w, *args))
