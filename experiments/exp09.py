"""Experiment 9: ResNet50 feature extractor, resize 224 + flip."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp09']

if __name__ == '__main__':
  main(CONFIG)
