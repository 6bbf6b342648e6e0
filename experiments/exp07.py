"""Experiment 7: ResNet18 feature extractor, resize 224 + normalize."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp07']

if __name__ == '__main__':
  main(CONFIG)
