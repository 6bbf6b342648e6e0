"""Experiment 21: ResNet18 detection from random initialization with the joint mask loss, sized for a small CPU."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp21']

if __name__ == '__main__':
  main(CONFIG)
