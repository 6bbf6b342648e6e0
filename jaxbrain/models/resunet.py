"""ResUNet: a U-Net with residual blocks, for tumor segmentation (localization).

[B, H, W, 3] -> tumor logits [B, H, W] at input resolution (H, W divisible by 16; by 32 with a
ResNet encoder). The encoder is either residual blocks of widths `width * (1, 2, 4, 8, 16)`, or
the ResNet18/50 backbone (`encoder='resnet18'`), whose parameters live under `backbone/` exactly
as in the classifier, so ported ImageNet weights drop in with `with_pretrained_backbone`.
Convolution, normalization and pooling are module arguments, plugged in by `models.create_segmenter`
as for the ResNet.
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxbrain import kernels
from jaxbrain.models.layers import BatchNorm
from jaxbrain.models.resnet import ARCHITECTURES, ModuleDef, ResNetBackbone, conv_init

ENCODERS = ('residual', *ARCHITECTURES)
"""The ResUNet's encoders: its own residual one, or a ResNet's (ImageNet weights can start it)."""


class ResidualBlock(nn.Module):
  """BN-ReLU-conv3x3 twice (pre-activation) with a 1x1 projection shortcut when the shape changes."""
  features: int
  strides: int = 1
  conv: ModuleDef = nn.Conv
  norm: ModuleDef = BatchNorm

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(self.conv, use_bias=False, kernel_init=conv_init)
    y = nn.relu(self.norm(name='bn1')(x))
    y = conv(self.features, (3, 3), (self.strides, self.strides), padding=((1, 1), (1, 1)), name='conv1')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = conv(self.features, (3, 3), padding=((1, 1), (1, 1)), name='conv2')(y)
    if x.shape != y.shape:
      x = conv(self.features, (1, 1), (self.strides, self.strides), name='shortcut')(x)
    return x + y


def _upsample(x, like):
  """Bilinear 2x upsampling to the skip connection's spatial size."""
  return jax.image.resize(x, (x.shape[0], like.shape[1], like.shape[2], x.shape[3]), 'bilinear')


class ResUNet(nn.Module):
  """U-Net with residual blocks; `encoder` is 'residual' (from scratch) or a ResNet name.

  `deep_supervision` = k > 0 adds a 1x1 logits head on each of the k decoder levels below the
  output; in training their logits, resized to the input's size, are sown as
  `intermediates/deep_logits` (deepest level first) for the loss to read (deep supervision).
  """
  width: int = 16
  encoder: str = 'residual'
  deep_supervision: int = 0
  conv: ModuleDef = nn.Conv
  norm: ModuleDef = BatchNorm
  pool: Callable = kernels.max_pool

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = functools.partial(self.norm, use_running_average=not train)
    block = functools.partial(ResidualBlock, conv=self.conv, norm=norm)
    height, width = x.shape[1:3]
    if self.encoder == 'residual':
      skips = [self.conv(self.width, (3, 3), padding=((1, 1), (1, 1)), kernel_init=conv_init, name='stem')(x)]
      for level in range(1, 5):
        skips.append(block(self.width * 2 ** level, strides=2, name=f'down{level}')(skips[-1]))
    else:
      if self.encoder not in ARCHITECTURES:
        raise ValueError(f'unknown encoder {self.encoder!r}; choose one of {ENCODERS}')
      keywords = ARCHITECTURES[self.encoder].keywords
      skips = ResNetBackbone(keywords['stage_sizes'], keywords['block_cls'], conv=self.conv,
                             norm=self.norm, pool=self.pool, name='backbone')(x, train)
    y = skips[-1]
    for level, skip in reversed(list(enumerate(skips[:-1]))):
      y = jnp.concatenate([_upsample(y, skip), skip], axis=-1)
      y = block(self.width * 2 ** level, name=f'up{level}')(y)
      if 0 < level <= self.deep_supervision and (train or self.is_initializing()):
        aux = self.conv(1, (1, 1), name=f'deep_logits{level}')(nn.relu(y))
        self.sow('intermediates', 'deep_logits',
                 jax.image.resize(aux, (aux.shape[0], height, width, 1), 'bilinear')[..., 0])
    if y.shape[1:3] != (height, width):  # ResNet encoders start at stride 2
      y = jax.image.resize(y, (y.shape[0], height, width, y.shape[3]), 'bilinear')
      y = block(self.width, name='full_resolution')(y)
    y = nn.relu(norm(name='out_bn')(y))
    return self.conv(1, (1, 1), name='logits')(y)[..., 0]

  def mask_logits(self, x, flip_average: bool = False):
    """Tumor logits [B, H, W] in inference mode; `flip_average` averages them with the mirrored
    slice's logits, mirrored back (test-time augmentation)."""
    logits = self(x)
    if flip_average:
      logits = (logits + self(x[:, :, ::-1])[:, :, ::-1]) / 2
    return logits
