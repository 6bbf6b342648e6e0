"""Experiment 12: ResNet18 fine-tune, resize 224 + flip."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp12']

if __name__ == '__main__':
  main(CONFIG)
