"""Experiment 16: ResNet18 fine-tune, resize 224 + flip + normalize."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp16']

if __name__ == '__main__':
  main(CONFIG)
