"""Gradients rewritten for XLA:CPU: the same values as `jaxbrain.kernels.XLA`, computed faster there.

Each rewrite replaces a gradient XLA:CPU lowers poorly (profiles and side-by-side timings:
docs/performance.md and `bench/conv_layers.py`):
- BatchNorm's closed-form gradient: two reductions and one elementwise pass per layer, where
  autodiff through the moments takes three reductions;
- max pooling's gradient as one fused masked sum over the window offsets, where XLA expands
  select-and-scatter into index tensors, a variadic reduce-window and a scatter;
- the input gradient of stride-1 'same' convolutions on small maps with large kernels (a ResNet's
  last stage) as one GEMM against the kernel as stored plus a shifted sum, where XLA flips and
  transposes a copy of the kernel first;
- on large batches, each convolution's weight gradient summed over chunks of the batch, where XLA
  transposes the whole batch's input (recomputing its BatchNorm/ReLU chain) in one cache-hostile pass.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxbrain.kernels import Kernels, batch_moments, batch_normalize as reference_batch_normalize
from jaxbrain.kernels import max_pool as reference_max_pool, normalize

# Convolutions whose input gradient goes through `_conv_small_map`: at most this many output
# pixels, and at least this many input x output channels.
SMALL_MAP_PIXELS = 64
SMALL_MAP_CHANNEL_PRODUCT = 256 * 256
# Examples per weight-gradient chunk (batches larger than this are chunked); chosen side by side
# against 4 examples and byte-sized chunks at batch 8 and 32 (docs/performance.md).
WEIGHT_GRADIENT_CHUNK = 8


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_normalize(x, scale, bias, epsilon: float):
  """`kernels.batch_normalize` with the closed-form gradient."""
  return reference_batch_normalize(x, scale, bias, epsilon)


def _batch_normalize_fwd(x, scale, bias, epsilon):
  mean, var = batch_moments(x)
  return (normalize(x, scale, bias, mean, var, epsilon), mean, var), (x, scale, mean, var)


def _batch_normalize_bwd(epsilon, residuals, cotangents):
  x, scale, mean, var = residuals
  grad_y, grad_mean, grad_var = cotangents
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  inv_std = jnp.reciprocal(jnp.sqrt(var + epsilon))
  centered = x.astype(jnp.float32) - mean
  grad_y = grad_y.astype(jnp.float32)
  grad_bias = jnp.sum(grad_y, axes)
  grad_scale = jnp.sum(grad_y * centered, axes) * inv_std
  grad_x = (scale * inv_std) * (grad_y - (grad_bias + centered * (inv_std * grad_scale)) / n)
  grad_x = grad_x + grad_mean / n + centered * (2 * grad_var / n)
  return grad_x.astype(x.dtype), grad_scale, grad_bias


batch_normalize.defvjp(_batch_normalize_fwd, _batch_normalize_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x, window: int = 3, stride: int = 2, padding: int = 1):
  """`kernels.max_pool` whose gradient goes to the first maximum of each window in row-major order
  (as PyTorch and XLA's select-and-scatter do), as one fused masked sum."""
  return reference_max_pool(x, window, stride, padding)


def _max_pool_fwd(x, window, stride, padding):
  y = max_pool(x, window, stride, padding)
  return y, (x, y)


def _window_views(padded, window: int, stride: int, out_hw: tuple[int, int]):
  """The window*window strided views of `padded` [B, H, W, C], one per offset in the window."""
  span_h, span_w = stride * (out_hw[0] - 1) + 1, stride * (out_hw[1] - 1) + 1
  for i in range(window):
    for j in range(window):
      yield (i, j), padded[:, i:i + span_h:stride, j:j + span_w:stride, :]


def _max_pool_bwd(window, stride, padding, residuals, grad):
  x, y = residuals
  pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  padded = jnp.pad(x, pads, constant_values=-jnp.inf)
  out_hw = y.shape[1:3]
  taken = jnp.zeros(y.shape, bool)
  grad_padded = jnp.zeros(padded.shape, grad.dtype)
  for (i, j), view in _window_views(padded, window, stride, out_hw):
    first = (view == y) & ~taken
    taken = taken | first
    placed = lax.pad(jnp.where(first, grad, 0), jnp.zeros((), grad.dtype), (
        (0, 0, 0),
        (i, padded.shape[1] - i - stride * (out_hw[0] - 1) - 1, stride - 1),
        (j, padded.shape[2] - j - stride * (out_hw[1] - 1) - 1, stride - 1),
        (0, 0, 0)))
    grad_padded = grad_padded + placed
  height, width = x.shape[1:3]
  return (grad_padded[:, padding:padding + height, padding:padding + width, :],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
         feature_group_count=1, precision=None, **kwargs):
  """`lax.conv_general_dilated`, same values; small-map and large-batch NHWC convolutions get the
  rewritten gradients (module docstring), every other one lax's."""
  spatial, in_features, out_features = lhs.shape[1:-1], rhs.shape[-2], rhs.shape[-1]
  kernel = rhs.shape[:-2]
  plain_2d_nhwc = len(spatial) == 2 and _is_nhwc(dimension_numbers, lhs.ndim) and feature_group_count == 1
  if (plain_2d_nhwc and tuple(window_strides) == (1, 1) and all(k % 2 for k in kernel)
      and _is_same_padding(padding, kernel) and not kwargs
      and all(d in (None, 1, (1, 1)) for d in (lhs_dilation, rhs_dilation))
      and spatial[0] * spatial[1] <= SMALL_MAP_PIXELS and in_features * out_features >= SMALL_MAP_CHANNEL_PRODUCT):
    return _conv_small_map(lhs, rhs)
  if plain_2d_nhwc and len(lhs) > WEIGHT_GRADIENT_CHUNK:
    convolve = functools.partial(lax.conv_general_dilated, window_strides=window_strides, padding=padding,
                                 lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=_NHWC,
                                 precision=precision, **kwargs)
    return _conv_chunked_weight_gradient(convolve, WEIGHT_GRADIENT_CHUNK, lhs, rhs)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, precision=precision, **kwargs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _conv_chunked_weight_gradient(convolve, chunk: int, x, w):
  """`convolve(x, w)` whose weight gradient is the sum of the gradients of `chunk`-example slices."""
  return convolve(x, w)


def _conv_chunked_weight_gradient_fwd(convolve, chunk, x, w):
  return convolve(x, w), (x, w)


def _conv_chunked_weight_gradient_bwd(convolve, chunk, residuals, grad):
  x, w = residuals
  grad_x = jax.vjp(lambda x: convolve(x, w), x)[1](grad)[0]
  weight_gradient = lambda x, grad: jax.vjp(lambda w: convolve(x, w), w)[1](grad)[0]
  parts = [weight_gradient(x[i:i + chunk], grad[i:i + chunk]).astype(jnp.float32)  # summed in float32, as one
           for i in range(0, len(x), chunk)]                                         # convolution would
  return grad_x, functools.reduce(jnp.add, parts).astype(w.dtype)


_conv_chunked_weight_gradient.defvjp(_conv_chunked_weight_gradient_fwd, _conv_chunked_weight_gradient_bwd)


def _is_nhwc(dimension_numbers, ndim: int) -> bool:
  expected = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, _NHWC)
  return dimension_numbers is not None and lax.conv_dimension_numbers(
      (1,) * ndim, (1,) * ndim, dimension_numbers) == expected  # None is lax's NCHW


def _is_same_padding(padding, kernel) -> bool:
  if isinstance(padding, str):
    return padding == 'SAME'
  return [tuple(p) for p in padding] == [(k // 2, k // 2) for k in kernel]


def _same_conv(x, w):
  pads = [(k // 2, k // 2) for k in w.shape[:2]]
  return lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=_NHWC)


@jax.custom_vjp
def _conv_small_map(x, w):
  """Stride-1 'same' NHWC convolution whose input gradient is one GEMM and a shifted sum."""
  return _same_conv(x, w)


def _conv_small_map_fwd(x, w):
  return _same_conv(x, w), (x, w)


def _conv_small_map_bwd(residuals, grad):
  x, w = residuals
  _, vjp = jax.vjp(_same_conv, x, w)
  return _input_gradient_by_gemm(grad, w), vjp(grad)[1]


def _input_gradient_by_gemm(grad, w):
  n, height, width, out_features = grad.shape
  kh, kw, in_features, _ = w.shape
  # each output position's contribution to the kh*kw input positions it saw, in one GEMM
  # against the kernel as stored (no flipped or transposed copy), then summed into place
  columns = lax.dot_general(grad.reshape(-1, out_features), w.reshape(-1, out_features), (((1,), (1,)), ((), ())),
                            preferred_element_type=jnp.float32)  # summed in float32, as a convolution would
  columns = columns.reshape(n, height, width, kh, kw, in_features)
  grad_x = sum(jnp.pad(columns[:, :, :, i, j], ((0, 0), (i, kh - 1 - i), (j, kw - 1 - j), (0, 0)))
               for i in range(kh) for j in range(kw))
  return grad_x[:, kh // 2:kh // 2 + height, kw // 2:kw // 2 + width].astype(grad.dtype)


_conv_small_map.defvjp(_conv_small_map_fwd, _conv_small_map_bwd)

KERNELS = Kernels('xla_cpu', conv, batch_normalize, max_pool)
