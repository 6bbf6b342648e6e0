"""Segmentation 2: ResUNet with a ResNet18 encoder (ImageNet init when its weights are present)."""
from experiments.common import main
from jaxbrain.train import TrainConfig

CONFIG = TrainConfig(experiment='seg02', task='segment', arch='resnet18', init='imagenet',
                     preprocess='resize_flip_affine_normalize', image_size=128, unet_width=16, batch_size=16, epochs=20,
                     optimizer='adam', learning_rate=1e-3, lr_schedule='cosine')

if __name__ == '__main__':
  main(CONFIG)
