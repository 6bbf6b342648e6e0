"""Experiment 10: ResNet50 fine-tune, resize 224 + flip."""
from experiments.common import main
from jaxbrain.train import TrainConfig

CONFIG = TrainConfig(experiment='exp10', arch='resnet50', strategy='finetune', preprocess='resize_flip',
                     batch_size=8, epochs=10, learning_rate=1e-4, momentum=0.5)

if __name__ == '__main__':
  main(CONFIG)
