"""Experiment 13: ResNet50 feature extractor, resize 224 + flip + normalize."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp13']

if __name__ == '__main__':
  main(CONFIG)
