"""Experiment 20: ResNet18 fine-tune, resize 224 + flip + normalize (the report: 97% accuracy)."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp20']

if __name__ == '__main__':
  main(CONFIG)
