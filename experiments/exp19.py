"""Experiment 19: ResNet50 fine-tune, resize 224 + flip + normalize (the report: 96% accuracy)."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp19']

if __name__ == '__main__':
  main(CONFIG)
