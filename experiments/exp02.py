"""Experiment 2: ResNet50 fine-tune, resize 224."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp02']

if __name__ == '__main__':
  main(CONFIG)
