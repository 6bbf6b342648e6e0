"""Experiment 7: ResNet18 feature extractor, resize 224 + normalize."""
from experiments.common import main
from jaxbrain.train import TrainConfig

CONFIG = TrainConfig(experiment='exp07', arch='resnet18', strategy='feature_extractor', preprocess='resize_normalize',
                     batch_size=8, epochs=10, learning_rate=1e-4, momentum=0.5)

if __name__ == '__main__':
  main(CONFIG)
