"""Flax ResNet18/50 (torchvision-equal), the report's classifier head, and weight porting."""
from jaxbrain.models.heads import REPORT_HEAD_DROPOUT, REPORT_HEAD_HIDDEN, ClassifierHead
from jaxbrain.models.porting import (WeightsError, WeightsNotFoundError, cached_torchvision_weights,
                                     find_weights, load_torchvision_weights, with_pretrained_backbone)
from jaxbrain.models.resnet import ARCHITECTURES, ResNet, ResNet18, ResNet50, create_model
