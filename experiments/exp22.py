"""Experiment 22: exp21 at full size (224 px, 30 epochs) for an accelerator."""
from experiments.common import main
from experiments.configs import EXPERIMENTS

CONFIG = EXPERIMENTS['exp22']

if __name__ == '__main__':
  main(CONFIG)
