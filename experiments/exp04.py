"""Experiment 4: ResNet18 fine-tune, resize 224."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp04']

if __name__ == '__main__':
  main(CONFIG)
