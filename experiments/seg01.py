"""Segmentation 1: ResUNet from scratch (residual encoder), Adam, BCE + soft Dice.

Augmentation flips, scales (±5%) and rotates (±15°) image and mask together.
"""
from experiments.common import main
from jaxbrain.train import TrainConfig

CONFIG = TrainConfig(experiment='seg01', task='segment', arch='resunet', init='scratch', preprocess='resize_flip_affine',
                     image_size=128, unet_width=16, batch_size=16, epochs=20, optimizer='adam', learning_rate=1e-3,
                     lr_schedule='cosine')

if __name__ == '__main__':
  main(CONFIG)
