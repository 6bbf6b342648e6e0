"""How a model's layers are computed, apart from what they compute.

A `Kernels` names three operations every jaxbrain model uses: convolution (for
`flax.linen.Conv(conv_general_dilated=...)`), training-mode batch normalization and square max
pooling. `XLA` is the plain JAX form of each, differentiated by autodiff; `xla_cpu.KERNELS`
computes the same values with gradients written for XLA:CPU's speed. Models take them as module
arguments (`models.create_model(..., kernels='auto' | 'xla' | 'xla_cpu')`); 'auto' picks
`xla_cpu` when JAX's default backend is the CPU.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax


@dataclasses.dataclass(frozen=True)
class Kernels:
  """The operations a model's layers call; every field computes the same values in every `Kernels`.

  conv: `lax.conv_general_dilated`'s signature.
  batch_normalize: (x [..., C], scale [C], bias [C], epsilon) -> (float32 y, batch mean [C], biased
    batch variance [C]): training-mode BatchNorm over all axes but the last.
  max_pool: (x [B, H, W, C], window, stride, padding) -> square max pooling with -inf padding.
  """
  name: str
  conv: Callable
  batch_normalize: Callable
  max_pool: Callable


def normalize(x, scale, bias, mean, var, epsilon):
  """(x - mean) / sqrt(var + epsilon) * scale + bias in float32, as one multiply-add per element."""
  multiplier = scale * jnp.reciprocal(jnp.sqrt(var + epsilon))
  return x.astype(jnp.float32) * multiplier + (bias - mean * multiplier)


def batch_moments(x):
  """Mean and biased variance of [..., C] over all axes but the last, in float32."""
  axes = tuple(range(x.ndim - 1))
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axes)
  return mean, jnp.mean(jnp.square(x32 - mean), axes)


def batch_normalize(x, scale, bias, epsilon: float):
  """Training-mode BatchNorm (see `Kernels`); its gradient is autodiff's."""
  mean, var = batch_moments(x)
  return normalize(x, scale, bias, mean, var, epsilon), mean, var


def max_pool(x, window: int = 3, stride: int = 2, padding: int = 1):
  """Square max pooling over H, W of [B, H, W, C] with -inf padding (PyTorch's `MaxPool2d`)."""
  pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), pads)


XLA = Kernels('xla', lax.conv_general_dilated, batch_normalize, max_pool)
CHOICES = ('auto', 'xla', 'xla_cpu')


def get(name: str = 'auto') -> Kernels:
  """The kernels called `name`; 'auto': `xla_cpu` on a CPU backend, else `xla` (XLA's own gradients,
  e.g. cuDNN's on GPUs)."""
  if name not in CHOICES:
    raise ValueError(f'unknown kernels {name!r}; choose one of {CHOICES}')
  if name == 'auto':
    name = 'xla_cpu' if jax.default_backend() == 'cpu' else 'xla'
  if name == 'xla':
    return XLA
  from jaxbrain.kernels import xla_cpu
  return xla_cpu.KERNELS
