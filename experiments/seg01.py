"""Segmentation 1: ResUNet from scratch (residual encoder), Adam, BCE + soft Dice; the CPU-sized recipe:
each patient on one intensity scale, 2.5D input, epochs of half tumor slices."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['seg01']

if __name__ == '__main__':
  main(CONFIG)
