"""Experiment 10: ResNet50 fine-tune, resize 224 + flip."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp10']

if __name__ == '__main__':
  main(CONFIG)
