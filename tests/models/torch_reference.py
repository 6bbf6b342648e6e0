"""A torchvision-compatible ResNet written for the tests: the same module structure and state_dict
keys as torchvision.models.resnet18/resnet50 (v1.5), without installing torchvision."""
import torch
from torch import nn


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: stride in the 3x3
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):

  def __init__(self, block, layers, num_classes=1000):
    super().__init__()
    self.inplanes = 64
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.layer1 = self._make_layer(block, 64, layers[0])
    self.layer2 = self._make_layer(block, 128, layers[1], 2)
    self.layer3 = self._make_layer(block, 256, layers[2], 2)
    self.layer4 = self._make_layer(block, 512, layers[3], 2)
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(512 * block.expansion, num_classes)

  def _make_layer(self, block, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x, upto=None):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for name in ('layer1', 'layer2', 'layer3', 'layer4'):
      x = getattr(self, name)(x)
      if name == upto:
        return x
    return self.fc(torch.flatten(self.avgpool(x), 1))


def reference(arch, seed=0):
  """A randomly initialized reference with randomized BatchNorm statistics and affine parameters."""
  torch.manual_seed(seed)
  model = ResNet(BasicBlock, [2, 2, 2, 2]) if arch == 'resnet18' else ResNet(Bottleneck, [3, 4, 6, 3])
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.BatchNorm2d):
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 2.0)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.3, 0.3)
  return model.eval()
