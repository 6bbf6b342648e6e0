"""Segmentation 2: ResUNet with a ResNet18 encoder (ImageNet init when its weights are present)."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['seg02']

if __name__ == '__main__':
  main(CONFIG)
