"""Experiment 6: ResNet50 fine-tune, resize 224 + normalize."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp06']

if __name__ == '__main__':
  main(CONFIG)
