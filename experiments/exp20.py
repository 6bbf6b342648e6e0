"""Experiment 20: ResNet18 fine-tune, resize 224 + flip + normalize (the report: 97% accuracy)."""
from experiments.common import main
from jaxbrain.train import TrainConfig

CONFIG = TrainConfig(experiment='exp20', arch='resnet18', strategy='finetune', preprocess='resize_flip_normalize',
                     batch_size=8, epochs=30, learning_rate=1e-4, momentum=0.5)

if __name__ == '__main__':
  main(CONFIG)
