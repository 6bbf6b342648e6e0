"""Experiment 3: ResNet18 feature extractor, resize 224."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp03']

if __name__ == '__main__':
  main(CONFIG)
