"""Experiment 17: ResNet50 feature extractor, resize 224 + flip + normalize."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp17']

if __name__ == '__main__':
  main(CONFIG)
