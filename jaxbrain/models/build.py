"""Models from names and configs, with the platform's kernels plugged into every layer."""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from jaxbrain import kernels as kernel_sets
from jaxbrain.models.layers import BatchNorm
from jaxbrain.models.resnet import ARCHITECTURES, ResNet
from jaxbrain.models.resunet import ResUNet


def layer_arguments(kernels: str | kernel_sets.Kernels = 'auto') -> dict:
  """The `conv`, `norm` and `pool` module arguments that compute every layer with `kernels`."""
  chosen = kernels if isinstance(kernels, kernel_sets.Kernels) else kernel_sets.get(kernels)
  return {'conv': functools.partial(nn.Conv, conv_general_dilated=chosen.conv),
          'norm': functools.partial(BatchNorm, batch_normalize=chosen.batch_normalize), 'pool': chosen.max_pool}


def create_model(arch: str, kernels: str | kernel_sets.Kernels = 'auto', **kwargs) -> ResNet:
  """`create_model('resnet18', num_classes=2, head_hidden=(256, 128))`; `kernels`: see `jaxbrain.kernels`."""
  if arch not in ARCHITECTURES:
    raise ValueError(f'unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}')
  return ARCHITECTURES[arch](**layer_arguments(kernels), **kwargs)


def create_segmenter(encoder: str = 'residual', width: int = 16, kernels: str | kernel_sets.Kernels = 'auto',
                     deep_supervision: int = 0) -> ResUNet:
  """A ResUNet with the `encoder` ('residual' or a ResNet name), first-level `width` and
  `deep_supervision` levels."""
  return ResUNet(width=width, encoder=encoder, deep_supervision=deep_supervision, **layer_arguments(kernels))


def build(model_config) -> nn.Module:
  """The model a config's `model` section describes (`ResNetConfig` or `ResUNetConfig`, told apart
  by their `family`)."""
  if model_config.family not in ('resnet', 'resunet'):
    raise ValueError(f'{type(model_config).__name__}: no model family {model_config.family!r}')
  if model_config.family == 'resunet':
    return create_segmenter(model_config.encoder, model_config.unet_width,
                            deep_supervision=model_config.deep_supervision)
  return create_model(model_config.arch, num_classes=2, head_hidden=model_config.head_hidden,
                      dropout_rate=model_config.dropout_rate, dtype=jnp.dtype(model_config.compute_dtype),
                      mask_head=model_config.mask_head)
