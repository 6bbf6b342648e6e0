"""Layers whose exact semantics matter for matching PyTorch, with gradients written for XLA:CPU's speed.

The rewritten gradients of `max_pool` and `conv_general_dilated` are staged with
`lax.platform_dependent`: only a CPU lowering uses them; GPUs keep XLA's own (cuDNN's kernels).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, numerically PyTorch's `BatchNorm2d`.

  Unlike `flax.linen.BatchNorm`, the running variance is updated with the unbiased batch
  variance (n / (n - 1)), as PyTorch does; normalization uses the biased one. `momentum` keeps
  Flax's convention (weight of the old average): 0.9 here is PyTorch's 0.1. Under `jax.jit`
  with a data-sharded batch the statistics are over the global batch (synchronized BatchNorm).
  Variables: params `scale`, `bias`; batch_stats `mean`, `var` (the names Flax uses).
  """
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    running_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((features,), jnp.float32))
    running_var = self.variable('batch_stats', 'var', lambda: jnp.ones((features,), jnp.float32))
    if self.use_running_average:
      return _normalize(x, scale, bias, running_mean.value, running_var.value, self.epsilon).astype(self.dtype)
    y, mean, var = batch_normalize(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      n = x.size // features
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var * (n / max(n - 1, 1))
    return y.astype(self.dtype)


def _normalize(x, scale, bias, mean, var, epsilon):
  multiplier = scale * jnp.reciprocal(jnp.sqrt(var + epsilon))
  return x.astype(jnp.float32) * multiplier + (bias - mean * multiplier)


def _batch_moments(x):
  axes = tuple(range(x.ndim - 1))
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axes)
  return mean, jnp.mean(jnp.square(x32 - mean), axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_normalize(x, scale, bias, epsilon: float):
  """Training-mode BatchNorm of [..., C] over all axes but the last: (float32 y, batch mean, biased var).

  The gradient is the closed form (two reductions and one elementwise pass per layer) rather than
  autodiff through the moments, which XLA:CPU computes with three reductions.
  """
  mean, var = _batch_moments(x)
  return _normalize(x, scale, bias, mean, var, epsilon), mean, var


def _batch_normalize_fwd(x, scale, bias, epsilon):
  y, mean, var = batch_normalize(x, scale, bias, epsilon)
  return (y, mean, var), (x, scale, mean, var)


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


def _window_views(padded, window: int, stride: int, out_hw: tuple[int, int]):
  """The window*window strided views of `padded` [B, H, W, C], one per offset in the window."""
  span_h, span_w = stride * (out_hw[0] - 1) + 1, stride * (out_hw[1] - 1) + 1
  for i in range(window):
    for j in range(window):
      yield (i, j), padded[:, i:i + span_h:stride, j:j + span_w:stride, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x, window: int = 3, stride: int = 2, padding: int = 1):
  """Square max pooling over H, W of [B, H, W, C] with -inf padding (PyTorch's `MaxPool2d`).

  Same values as `flax.linen.max_pool`; the gradient goes to the first maximum of each window in
  row-major order, as PyTorch and XLA's select-and-scatter do, but it is computed as one fused
  masked sum over the window offsets. XLA:CPU expands select-and-scatter into four index tensors,
  a variadic reduce-window and a scatter: ~130 ms of a 650-ms ResNet18 training step (batch 8, 2
  CPU cores) in a profile; the step runs ~7% faster without them (README, Performance). On other
  platforms the gradient is XLA's select-and-scatter.
  """
  return _reduce_window_max(x, window, stride, padding)


def _reduce_window_max(x, window, stride, padding):
  pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), pads)


def _max_pool_fwd(x, window, stride, padding):
  y = max_pool(x, window, stride, padding)
  return y, (x, y)


def _max_pool_bwd(window, stride, padding, residuals, grad):
  x, y = residuals
  reduce_window = lambda x: _reduce_window_max(x, window, stride, padding)
  xla_gradient = lambda x, y, grad: jax.vjp(reduce_window, x)[1](grad)[0]  # select-and-scatter
  first_max = functools.partial(_first_max_gradient, window, stride, padding)
  return (lax.platform_dependent(x, y, grad, cpu=first_max, default=xla_gradient),)


def _first_max_gradient(window, stride, padding, x, y, grad):
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
  return grad_padded[:, padding:padding + height, padding:padding + width, :]


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """`lax.conv_general_dilated` for `flax.linen.Conv(conv_general_dilated=...)`, same values.

  Two gradients are rewritten for XLA:CPU (other platforms keep lax's):
  - stride-1 'same' convolutions on small maps with large kernels (a ResNet's last stage: 7x7 maps,
    512x512x3x3 kernels at 224 px) take their input gradient from `_conv_small_map`: XLA otherwise
    spends about as long flipping and transposing the kernel as convolving (bench: 17.6 -> 9.4 ms
    for 8x7x7x512, batch 8);
  - on large batches the weight gradient is summed over chunks of the batch
    (`_conv_chunked_weight_gradient`).
  """
  spatial, in_features, out_features = lhs.shape[1:-1], rhs.shape[-2], rhs.shape[-1]
  kernel = rhs.shape[:-2]
  plain_2d_nhwc = len(spatial) == 2 and _is_nhwc(dimension_numbers, lhs.ndim) and feature_group_count == 1
  if (plain_2d_nhwc and tuple(window_strides) == (1, 1) and all(k % 2 for k in kernel)
      and _is_same_padding(padding, kernel) and not kwargs
      and all(d in (None, 1, (1, 1)) for d in (lhs_dilation, rhs_dilation))
      and spatial[0] * spatial[1] <= 64 and in_features * out_features >= 256 * 256):
    return _conv_small_map(lhs, rhs)
  if plain_2d_nhwc and len(lhs) > WEIGHT_GRADIENT_CHUNK:
    conv = functools.partial(lax.conv_general_dilated, window_strides=window_strides, padding=padding,
                             lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=_NHWC,
                             precision=precision, **kwargs)
    return _conv_chunked_weight_gradient(conv, WEIGHT_GRADIENT_CHUNK, lhs, rhs)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, precision=precision, **kwargs)


# XLA:CPU feeds a weight-gradient convolution its input transposed to [C, H, W, N], recomputing the
# input's BatchNorm/ReLU/residual chain inside a transpose whose reads stride across the whole
# batch; once the chain's inputs outgrow the cache that transpose dominates (ResNet18 at batch 32:
# 0.45-0.59 s of a 2.35 s step in a profile, 0.19 s in chunks). Measured side by side: chunks of
# 4 examples were slower at batch 8, chunks sized by bytes (more examples on smaller maps) slower
# at batch 32 than 8 examples throughout.
WEIGHT_GRADIENT_CHUNK = 8


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _conv_chunked_weight_gradient(conv, chunk: int, x, w):
  """`conv(x, w)` whose weight gradient on CPU is the sum of the gradients of `chunk`-example slices."""
  return conv(x, w)


def _conv_chunked_weight_gradient_fwd(conv, chunk, x, w):
  return conv(x, w), (x, w)


def _conv_chunked_weight_gradient_bwd(conv, chunk, residuals, grad):
  x, w = residuals
  grad_x = jax.vjp(lambda x: conv(x, w), x)[1](grad)[0]
  weight_gradient = lambda x, grad: jax.vjp(lambda w: conv(x, w), w)[1](grad)[0]

  def chunked(x, grad):  # summed in float32, as one convolution would
    parts = [weight_gradient(x[i:i + chunk], grad[i:i + chunk]).astype(jnp.float32) for i in range(0, len(x), chunk)]
    return functools.reduce(jnp.add, parts).astype(w.dtype)

  return grad_x, lax.platform_dependent(x, grad, cpu=chunked, default=weight_gradient)


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
  """Stride-1 'same' NHWC convolution whose input gradient is one matmul and a shifted sum."""
  return _same_conv(x, w)


def _conv_small_map_fwd(x, w):
  return _same_conv(x, w), (x, w)


def _conv_small_map_bwd(residuals, grad):
  x, w = residuals
  _, vjp = jax.vjp(_same_conv, x, w)
  xla_input_gradient = lambda grad, w: vjp(grad)[0]
  grad_x = lax.platform_dependent(grad, w, cpu=_input_gradient_by_gemm, default=xla_input_gradient)
  return grad_x, vjp(grad)[1]


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
