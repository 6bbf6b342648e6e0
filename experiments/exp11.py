"""Experiment 11: ResNet18 feature extractor, resize 224 + flip."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp11']

if __name__ == '__main__':
  main(CONFIG)
