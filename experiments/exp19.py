"""Experiment 19: ResNet50 fine-tune, resize 224 + flip + normalize (the report: 96% accuracy)."""
from experiments.common import main
from jaxbrain.train import TrainConfig

CONFIG = TrainConfig(experiment='exp19', arch='resnet50', strategy='finetune', preprocess='resize_flip_normalize',
                     batch_size=8, epochs=30, learning_rate=1e-4, momentum=0.5)

if __name__ == '__main__':
  main(CONFIG)
