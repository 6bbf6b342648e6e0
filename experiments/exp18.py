"""Experiment 18: ResNet18 feature extractor, resize 224 + flip + normalize."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp18']

if __name__ == '__main__':
  main(CONFIG)
