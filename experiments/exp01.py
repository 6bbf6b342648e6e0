"""Experiment 1: ResNet50 feature extractor, resize 224."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp01']

if __name__ == '__main__':
  main(CONFIG)
