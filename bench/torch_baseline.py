"""The plain PyTorch script jaxbrain's from-scratch detection is compared with, on the same patients.

  python bench/torch_baseline.py --data-dir ../shared/data/lgg/kaggle_3m [--out bench/results/torch_baseline]
  python bench/torch_baseline.py --data-dir ../shared/data/lgg/kaggle_3m --fold 0 --out bench/results/torch_baseline_fold0

What a PyTorch user writes without ImageNet weights: a ResNet18 (torchvision's architecture and
initialization, its single `fc` layer) from scratch, 128 px, random horizontal flips, ImageNet
normalization, Adam 1e-3, batch 32, 5 epochs, on all CPU cores. It follows jaxbrain's protocol so
the two are comparable row by row: the same train / validation / test patients
(`jaxbrain.data.make_split('patient', seed)`), the epoch picked on validation ROC AUC, test
evaluated once, the same metrics with patient-bootstrap intervals. Writes `metrics.json` and
`test_predictions.csv` (the columns of a jaxbrain run, so a paired comparison can read both).

A fair peer gets the wall time of the jaxbrain run it is compared with: `--same-time-as RUN` (or
`--seconds S`) trains epoch after epoch, data loading included, until another epoch would end past
that time (`--epochs` is then only a cap), so its epochs fill the same budget on the same machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-dir', required=True, help='the kaggle_3m folder')
  parser.add_argument('--out', default='bench/results/torch_baseline')
  parser.add_argument('--epochs', type=int, help='epochs (default: 5; with a time budget, no cap unless given)')
  parser.add_argument('--seconds', type=float, help='wall-time budget: epochs fill it (see --same-time-as)')
  parser.add_argument('--same-time-as', help='a jaxbrain run folder: its metrics.json wall time is the budget')
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--image-size', type=int, default=128)
  parser.add_argument('--learning-rate', type=float, default=1e-3)
  parser.add_argument('--seed', type=int, default=0, help='the split (as jaxbrain\'s --seed) and the initialization')
  parser.add_argument('--fold', type=int, help='test on this fold of a 5-fold patient split (as jaxbrain\'s --fold)')
  parser.add_argument('--workdir', default='checkpoints', help='where jaxbrain keeps its built datasets (reused)')
  args = parser.parse_args()
  if args.same_time_as:
    args.seconds = json.loads((Path(args.same_time_as) / 'metrics.json').read_text())['timing']['seconds']
  args.epochs = args.epochs or (10_000 if args.seconds else 5)

  import numpy as np
  import torch
  from torch import nn

  sys.path.insert(0, str(ROOT))
  from jaxbrain.data import builder, make_split
  from jaxbrain.data.kaggle3m import fingerprint
  from jaxbrain.files import write_csv, write_json
  from jaxbrain.folders import WorkDir
  from jaxbrain.metrics import classification_metrics, patient_intervals
  from tests.models.torch_reference import BasicBlock, ResNet

  began = time.perf_counter()
  root = Path(args.data_dir)
  content = fingerprint(root)
  data = builder.load_dataset(root, builder.default_data_dir(root, WorkDir(args.workdir).tfds, content))
  split = make_split('patient', data.patient, data.label, fold=args.fold, seed=args.seed)
  torch.manual_seed(args.seed)
  model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=2)
  for module in model.modules():  # torchvision's initialization of its ResNets
    if isinstance(module, nn.Conv2d):
      nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
  optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
  mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

  def prepare(indices, flip: bool):
    x = torch.from_numpy(data.image[indices]).permute(0, 3, 1, 2).float() / 255
    x = nn.functional.interpolate(x, size=(args.image_size,) * 2, mode='bilinear', antialias=True,
                                  align_corners=False)
    if flip:
      flipped = torch.rand(len(x)) < 0.5
      x[flipped] = x[flipped].flip(-1)
    return (x - mean) / std

  def probabilities(indices) -> np.ndarray:
    model.eval()
    with torch.no_grad():
      return np.concatenate([torch.softmax(model(prepare(indices[s:s + 64], False)), 1)[:, 1].numpy()
                             for s in range(0, len(indices), 64)])

  rng = np.random.default_rng(args.seed)
  best = (-1.0, None, None)
  history = []
  for epoch in range(1, args.epochs + 1):
    epoch_began = time.perf_counter()
    model.train()
    order = rng.permutation(split.train)
    losses = []
    for s in range(0, len(order) - args.batch_size + 1, args.batch_size):
      idx = order[s:s + args.batch_size]
      loss = nn.functional.cross_entropy(model(prepare(idx, True)), torch.from_numpy(data.label[idx]).long())
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      losses.append(float(loss))
    validation = classification_metrics(data.label[split.validation], probabilities(split.validation))
    history.append({'epoch': epoch, 'train_loss': float(np.mean(losses)), 'validation_roc_auc': validation['roc_auc'],
                    'seconds': time.perf_counter() - began})
    print(json.dumps(history[-1]), flush=True)
    if validation['roc_auc'] > best[0]:
      best = (validation['roc_auc'], epoch, {k: v.clone() for k, v in model.state_dict().items()})
    if args.seconds and history[-1]['seconds'] + (time.perf_counter() - epoch_began) > args.seconds:
      break  # another epoch would end past the budget
  model.load_state_dict(best[2])
  test_probabilities = probabilities(split.test)
  labels = data.label[split.test]
  test = classification_metrics(labels, test_probabilities)
  test.update(patient_intervals(lambda rows, groups: classification_metrics(labels[rows], test_probabilities[rows]),
                                data.patient[split.test], 1000, args.seed))
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  result = {**test, 'test': test, 'selected_epoch': best[1], 'validation_roc_auc': best[0], 'history': history,
            'seconds': time.perf_counter() - began, 'settings': vars(args), 'torch': torch.__version__,
            'threads': torch.get_num_threads(), 'data_fingerprint': content,
            'counts': {side: len(part) for side, part in split.sides().items()}}
  write_json(out / 'metrics.json', result)
  write_csv(out / 'test_predictions.csv', [
      {'path': data.path[i], 'patient': data.patient[i], 'slice': int(data.slice[i]), 'probability': repr(float(p)),
       'label': int(p >= 0.5), 'truth': int(data.label[i])} for i, p in zip(split.test, test_probabilities)])
  print(f'test: accuracy {test["accuracy"]:.3f}, balanced {test["balanced_accuracy"]:.3f}, ROC AUC '
        f'{test["roc_auc"]:.3f} {test.get("confidence_95", {}).get("roc_auc")}; epoch {best[1]} selected; '
        f'{result["seconds"] / 60:.1f} min', flush=True)


if __name__ == '__main__':
  main()
