"""Experiment 5: ResNet50 feature extractor, resize 224 + normalize."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp05']

if __name__ == '__main__':
  main(CONFIG)
