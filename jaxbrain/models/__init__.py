"""Flax ResNet18/50 (torchvision-equal), the report's classifier head, the ResUNet, and weight porting."""
from jaxbrain.models.build import build, create_model, create_segmenter, layer_arguments
from jaxbrain.models.heads import REPORT_HEAD_DROPOUT, REPORT_HEAD_HIDDEN, ClassifierHead
from jaxbrain.models.porting import (WeightsError, WeightsNotFoundError, cached_torchvision_weights,
                                     find_weights, load_torchvision_weights, with_pretrained_backbone)
from jaxbrain.models.resnet import ARCHITECTURES, ResNet, ResNet18, ResNet50
from jaxbrain.models.resunet import ENCODERS, ResUNet

__all__ = [
  'ARCHITECTURES',
  'ENCODERS',
  'REPORT_HEAD_DROPOUT',
  'REPORT_HEAD_HIDDEN',
  'ClassifierHead',
  'ResNet',
  'ResNet18',
  'ResNet50',
  'ResUNet',
  'WeightsError',
  'WeightsNotFoundError',
  'build',
  'cached_torchvision_weights',
  'create_model',
  'create_segmenter',
  'find_weights',
  'layer_arguments',
  'load_torchvision_weights',
  'with_pretrained_backbone',
]
