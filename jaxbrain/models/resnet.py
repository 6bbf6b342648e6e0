"""ResNet18/50 in Flax linen, numerically the torchvision networks (ResNet50 is v1.5).

Submodule names follow torchvision's state_dict (`conv1`, `bn1`, `layer1_0`, ...), so porting is
a plain key table (see `porting.py`). Parameters live under `backbone/...` and `head/...`: the
feature-extractor strategy freezes by that path prefix. BatchNorm (`layers.BatchNorm`) is PyTorch's:
epsilon 1e-5, momentum 0.9 in Flax's convention (= PyTorch's 0.1), unbiased running variance.
Convolution, normalization and pooling are module arguments (`conv`, `norm`, `pool`), as in flax's
ResNet: `models.create_model` plugs in the kernels for the platform (`jaxbrain.kernels`).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxbrain import kernels
from jaxbrain.models.heads import ClassifierHead, MaskHead
from jaxbrain.models.layers import BatchNorm

ModuleDef = Any

# torchvision initializes conv kernels with kaiming_normal_(mode='fan_out', nonlinearity='relu')
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # = PyTorch momentum 0.1
FROZEN_BN = ('running', 'batch')


def _pad(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """PyTorch's symmetric padding k//2 (SAME pads asymmetrically for stride 2 and differs)."""
  return ((k // 2, k // 2), (k // 2, k // 2))


def _shortcut(residual, y, features: int, strides: int, conv: Callable, norm: Callable):
  """Identity, or torchvision's `downsample` (1x1 strided conv + BN) when the shape changes."""
  if residual.shape == y.shape:
    return residual
  residual = conv(features, (1, 1), (strides, strides), padding='VALID', name='downsample_conv')(residual)
  return norm(name='downsample_bn')(residual)


class _Block(nn.Module):
  features: int
  strides: int = 1
  conv: Callable = nn.Conv
  norm: Callable = BatchNorm


class BasicBlock(_Block):
  """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut; ResNet18/34."""
  expansion = 1

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.features, (3, 3), (self.strides, self.strides), padding=_pad(3), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.norm(name='bn2')(self.conv(self.features, (3, 3), padding=_pad(3), name='conv2')(y))
    return nn.relu(y + _shortcut(x, y, self.features, self.strides, self.conv, self.norm))


class Bottleneck(_Block):
  """1x1 -> 3x3 (strided: v1.5) -> 1x1 with 4x expansion; ResNet50/101/152."""
  expansion = 4

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm(name='bn1')(self.conv(self.features, (1, 1), padding='VALID', name='conv1')(x)))
    y = self.conv(self.features, (3, 3), (self.strides, self.strides), padding=_pad(3), name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.norm(name='bn3')(self.conv(self.features * 4, (1, 1), padding='VALID', name='conv3')(y))
    return nn.relu(y + _shortcut(x, y, self.features * 4, self.strides, self.conv, self.norm))


class ResNetBackbone(nn.Module):
  """Stem + 4 stages: [B, H, W, 3] -> the feature pyramid (stem at stride 2, layer1..layer4 at
  strides 4..32), which the classifier pools (its last map) and a U-Net decodes.

  Each stage's output is sown into the `intermediates` collection (checks against a reference).
  `pool` is the stem's 3x3 stride-2 max pooling, `pool(x, window, stride, padding)`.
  """
  stage_sizes: Sequence[int]
  block_cls: Any
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  norm: ModuleDef = BatchNorm
  pool: Callable = kernels.max_pool

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(self.conv, use_bias=False, dtype=self.dtype, kernel_init=conv_init)
    norm = functools.partial(self.norm, use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                             dtype=self.dtype)
    x = conv(64, (7, 7), (2, 2), padding=_pad(7), name='conv1')(x.astype(self.dtype))
    x = nn.relu(norm(name='bn1')(x))
    pyramid = [x]
    x = self.pool(x, 3, 2, 1)
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(64 * 2 ** i, strides, conv=conv, norm=norm, name=f'layer{i + 1}_{j}')(x)
      self.sow('intermediates', f'layer{i + 1}', x)
      pyramid.append(x)
    return pyramid


def _global_pool(feature_map):
  return jnp.mean(feature_map, axis=(1, 2)).astype(jnp.float32)


class ResNet(nn.Module):
  """Backbone + classifier head; `head_hidden=()` gives torchvision's single `fc` layer.

  `frozen_backbone=True` puts the backbone behind a stop_gradient (the feature-extractor strategy:
  no gradient work is spent on it). Its BatchNorm then follows `frozen_bn`: 'running' normalizes
  with the stored running statistics and never updates them (Keras' convention; what the feature
  cache computes); 'batch' normalizes with batch statistics and updates the running ones in
  training, as a PyTorch backbone with `requires_grad=False` in `model.train()` does.

  `mask_head=True` adds a `MaskHead` on the backbone's pyramid: one tumor logit per 8x8-pixel
  cell, trained against the slice's mask (the joint loss of `train.steps.make_train_step`);
  `__call__(..., with_mask=True)` returns it beside the logits.
  """
  stage_sizes: Sequence[int]
  block_cls: Any
  num_classes: int = 1000
  head_hidden: Sequence[int] = ()
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  norm: ModuleDef = BatchNorm
  pool: Callable = kernels.max_pool
  mask_head: bool = False

  def setup(self):
    self.backbone = ResNetBackbone(self.stage_sizes, self.block_cls, self.dtype, conv=self.conv, norm=self.norm,
                                   pool=self.pool)
    self.head = ClassifierHead(self.num_classes, self.head_hidden, self.dropout_rate)
    if self.mask_head:
      self.tumor_cells = MaskHead(self.dtype, name='mask_head')

  @property
  def num_features(self) -> int:
    return 512 * self.block_cls.expansion

  def __call__(self, x, train: bool = False, frozen_backbone: bool = False, frozen_bn: str = 'running',
               with_mask: bool = False):
    if frozen_bn not in FROZEN_BN:
      raise ValueError(f'frozen_bn must be one of {FROZEN_BN}, got {frozen_bn!r}')
    pyramid = self.backbone(x, train=train and (not frozen_backbone or frozen_bn == 'batch'))
    features = _global_pool(pyramid[-1])
    if frozen_backbone:
      features = jax.lax.stop_gradient(features)
    logits = self.classify(features, train=train)
    if self.mask_head and (with_mask or self.is_initializing()):
      mask_logits = self.tumor_cells(pyramid)
      return (logits, mask_logits) if with_mask else logits
    if with_mask:
      raise ValueError('with_mask=True needs a model built with mask_head=True')
    return logits

  def features(self, x, train: bool = False):
    """Pooled backbone features [B, 512 | 2048], float32."""
    return _global_pool(self.backbone(x, train=train)[-1])

  def probability(self, x, flip_average: bool = False, with_mask_head: bool = False):
    """Tumor probability [B] in inference mode: the classifier's (class 1 of two), or with
    `with_mask_head` its geometric mean with the mask head's probability for its most likely
    8x8-pixel cell (two views of one backbone: the slice as a whole, and its strongest local
    evidence; a slice scores high only when both agree); `flip_average` averages it with the
    left-right mirrored slice's (test-time augmentation)."""

    def one_view(images):
      if not with_mask_head:
        return jax.nn.softmax(self(images))[:, 1]
      logits, cells = self(images, with_mask=True)
      return jnp.sqrt(jax.nn.softmax(logits)[:, 1] * jax.nn.sigmoid(cells.max(axis=(1, 2))))

    probability = one_view(x)
    if flip_average:
      probability = (probability + one_view(x[:, :, ::-1])) / 2
    return probability

  def classify(self, features, train: bool = False):
    """Logits [B, num_classes] from pooled features (cached features train the head alone)."""
    return self.head(features, train=train)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
"""ResNet18 as torchvision builds it: basic blocks, stages of 2, 2, 2, 2."""
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
"""ResNet50 as torchvision builds it: bottleneck blocks, stages of 3, 4, 6, 3."""
ARCHITECTURES = {'resnet18': ResNet18, 'resnet50': ResNet50}
"""The ResNets by the names configs and weight files use."""

