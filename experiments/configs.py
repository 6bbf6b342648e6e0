"""Every experiment's config, stated once: the report's grid (exp01-exp16) as one product, its four
final runs (exp17-exp20), detection from scratch (exp21, exp22) and the segmentation runs. `python -m experiments.configs` prints the
experiment table of `experiments/README.md` (a test keeps the two equal)."""
from __future__ import annotations

import itertools

from jaxbrain.config import Config
from jaxbrain.data.transforms import VARIANTS

# The report's optimizer for every classification run: batch 8, SGD lr 1e-4, momentum 0.5.
REPORT = Config.from_flags(batch_size=8, learning_rate=1e-4, momentum=0.5)
ARCHS = ('resnet50', 'resnet18')
STRATEGIES = ('feature_extractor', 'finetune')

GRID = {f'exp{i:02d}': REPORT.with_flags(experiment=f'exp{i:02d}', preprocess=preprocess, arch=arch, strategy=strategy,
                                         epochs=10)
        for i, (preprocess, arch, strategy) in enumerate(itertools.product(VARIANTS, ARCHS, STRATEGIES), start=1)}
FINAL = {f'exp{i:02d}': REPORT.with_flags(experiment=f'exp{i:02d}', preprocess='resize_flip_normalize', arch=arch,
                                          strategy=strategy, epochs=30)
         for i, (strategy, arch) in enumerate(itertools.product(STRATEGIES, ARCHS), start=17)}
SEGMENTATION = {
    # The CPU-sized recipe (chosen on validation patients: experiments/README.md, "Segmentation"):
    # each patient's scan on one intensity scale, each slice with its neighbours (2.5D), epochs of
    # half tumor slices.
    'seg01': Config.from_flags('segment', experiment='seg01', encoder='residual', init='scratch',
                               preprocess='resize_flip_affine', image_size=160, unet_width=16, batch_size=16,
                               epochs=30, optimizer='adam', learning_rate=1e-3, lr_schedule='cosine',
                               scale_volumes=True, context_slices=1, tumor_share=0.5),
    'seg02': Config.from_flags('segment', experiment='seg02', encoder='resnet18', init='imagenet',
                               preprocess='resize_flip_affine_normalize', image_size=128, unet_width=16,
                               batch_size=16, epochs=20, optimizer='adam', learning_rate=1e-3, lr_schedule='cosine'),
    # The full-size recipe, for an accelerator: the native 256 px (no down-and-up resampling of thin
    # tumors), twice seg01's width, deep supervision, intensity augmentation, twice the epochs, and
    # the inputs and epochs seg01's validation chose (volume scale, 2.5D, half tumor slices).
    'seg03': Config.from_flags('segment', experiment='seg03', encoder='residual', init='scratch',
                               preprocess='resize_flip_affine_intensity_normalize', image_size=256, unet_width=32,
                               deep_supervision=2, batch_size=16, epochs=60, optimizer='adam', learning_rate=1e-3,
                               lr_schedule='cosine', scale_volumes=True, context_slices=1, tumor_share=0.5),
}
# Detection from random initialization (no ImageNet weights): the recipe chosen on validation patients
# (experiments/README.md, "How exp21's recipe was chosen"); exp21 is sized for a small CPU, weighs
# the mask loss 3 and scores slices with both heads (each chosen later on five folds' validation), exp22 is
# its full-size variant for an accelerator (with the weight 1 it was measured with).
SCRATCH = Config.from_flags(init='scratch', preprocess='resize_flip_affine_normalize', mask_head=True,
                            head_hidden=(), dropout_rate=0.0, optimizer='adam', learning_rate=1e-3, lr_schedule='cosine',
                            batch_size=32)
DETECTION = {
    'exp21': SCRATCH.with_flags(experiment='exp21', image_size=128, epochs=12, mask_loss_weight=3.0,
                                score_with_mask_head=True),
    'exp22': SCRATCH.with_flags(experiment='exp22', image_size=224, epochs=30),
}
EXPERIMENTS = {**GRID, **FINAL, **DETECTION, **SEGMENTATION}
# The image model of tumour type (`python -m experiments.radiogenomics --image-model`), stated before
# its first run and not tuned: exp21's recipe without the mask head (the label is the patient's type,
# not where the tumour is), on the tumour-bearing slices; experiment `type01-<target key>`, one run
# per fold. Not in EXPERIMENTS: it needs --type-target and is scored per patient by that command.
TYPE_IMAGE = SCRATCH.with_flags(experiment='type01', image_size=128, epochs=12, mask_head=False, evals=())

STUDY_FIGURES = {'exp19': '96% accuracy', 'exp20': '97% accuracy'}  # on its 85/15 random slice split
_PREPROCESS = {'resize': 'resize 224', 'resize_normalize': 'resize 224 + normalize', 'resize_flip': 'resize 224 + flip',
               'resize_flip_normalize': 'resize 224 + flip + normalize'}
_STRATEGY = {'feature_extractor': 'feature extractor', 'finetune': 'fine-tune'}


def table() -> str:
  """The Markdown table of exp01-exp20, from the configs above."""
  lines = ['| module | model | strategy | preprocessing | batch | epochs | lr | momentum | report |',
           '|---|---|---|---|---|---|---|---|---|']
  for name, config in {**GRID, **FINAL}.items():
    lines.append(f'| `{name}` | {config.model.arch.replace("resnet", "ResNet")} | {_STRATEGY[config.task.strategy]} | '
                 f'{_PREPROCESS[config.data.preprocess]} | {config.batch_size} | {config.epochs} | '
                 f'{config.optimizer.learning_rate:.0e}'.replace('e-0', 'e-') + f' | {config.optimizer.momentum:g} | {STUDY_FIGURES.get(name, "—")} |')
  return '\n'.join(lines)


if __name__ == '__main__':
  print(table())
