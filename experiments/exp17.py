"""Experiment 17: ResNet50 feature extractor, resize 224 + flip + normalize."""
from experiments.common import main
from jaxbrain.train import TrainConfig

CONFIG = TrainConfig(experiment='exp17', arch='resnet50', strategy='feature_extractor', preprocess='resize_flip_normalize',
                     batch_size=8, epochs=30, learning_rate=1e-4, momentum=0.5)

if __name__ == '__main__':
  main(CONFIG)
