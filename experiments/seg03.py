"""Segmentation 3: the full-size ResUNet recipe for an accelerator (256 px, width 32, deep supervision,
with seg01's inputs: each patient on one intensity scale, 2.5D, epochs of half tumor slices); it runs
on a CPU too, only slower."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['seg03']

if __name__ == '__main__':
  main(CONFIG)
