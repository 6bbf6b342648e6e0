"""Experiment 1: ResNet50 feature extractor, resize 224."""
from experiments.common import main
from jaxbrain.train import TrainConfig

CONFIG = TrainConfig(experiment='exp01', arch='resnet50', strategy='feature_extractor', preprocess='resize',
                     batch_size=8, epochs=10, learning_rate=1e-4, momentum=0.5)

if __name__ == '__main__':
  main(CONFIG)
