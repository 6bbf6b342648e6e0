"""Fingerprints of the XLA programs jaxbrain's CPU steps compile to, to check a refactor kept them.

  python bench/hlo.py OUT_DIR      # writes OUT_DIR/<case>.hlo and prints one sha256 per case

Run it on two checkouts (`PYTHONPATH=<checkout> python bench/hlo.py ...`) and compare: equal
fingerprints mean the same optimized program. The text is the compiled HLO without source
metadata (file names, line numbers, the stack-frame tables), which a refactor changes harmlessly.
"""
from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path


def program_text(fn, *args) -> str:
  """The optimized HLO of `jax.jit(fn)(*args)` with source metadata removed."""
  import jax
  lines = jax.jit(fn).lower(*args).compile().as_text().splitlines()
  first_computation = next(i for i, line in enumerate(lines) if i > 0 and re.match(r'^(ENTRY |%|[A-Za-z_][\w.\-]* \{)', line))
  return re.sub(r', metadata=\{[^}]*\}', '', '\n'.join([lines[0]] + lines[first_computation:]))


def cases():
  """(name, step, state, batch) of the ResNet18 fine-tune train and eval steps at batch 8 (128 px)
  and 32 (64 px, chunked weight gradients), the seg01 ResUNet's train step, eval step and
  native-resolution probability steps (with and without flip averaging), and the Scorer's programs
  (`scorer_cases`): the training programs and the inference programs `predict` and a run's
  decisions use."""
  import jax
  import jax.numpy as jnp

  from jaxbrain.data import Preprocessing
  from jaxbrain.models import create_model, create_segmenter
  from jaxbrain.train.state import create_train_state
  from jaxbrain.train.steps import (make_eval_step, make_native_probability_step, make_segmentation_eval_step,
                                    make_segmentation_train_step, make_train_step)
  from jaxbrain.train.strategies import learning_rate_schedule, make_optimizer

  for size, batch in ((128, 8), (64, 32)):
    model = create_model('resnet18', num_classes=2, head_hidden=(256, 64), dropout_rate=0.25)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, size, size, 3)))
    tx = make_optimizer(variables['params'], learning_rate_schedule(1e-2, 'cosine', 100), 0.5, 'sgd', 5e-4)
    state = create_train_state(variables, tx, 0)
    images = {'image': jnp.zeros((batch, 256, 256, 3), jnp.uint8), 'label': jnp.zeros((batch,), jnp.int32)}
    yield f'resnet18-{size}px-batch{batch}-train', make_train_step(model, tx, Preprocessing(size), False), state, images
    yield f'resnet18-{size}px-batch{batch}-eval', make_eval_step(model, Preprocessing(size)), state, images
  model = create_segmenter('residual', 16)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
  tx = make_optimizer(variables['params'], learning_rate_schedule(1e-3, 'cosine', 100), 0.9, 'adam')
  batch = {'image': jnp.zeros((8, 256, 256, 3), jnp.uint8), 'mask': jnp.zeros((8, 256, 256), jnp.uint8)}
  preprocessing = Preprocessing.from_name('resize_flip_affine', 128)
  state = create_train_state(variables, tx, 0)
  yield 'resunet-128px-batch8-train', make_segmentation_train_step(model, tx, preprocessing), state, batch
  yield 'resunet-128px-batch8-eval', make_segmentation_eval_step(model, preprocessing), state, batch
  for flip in (False, True):
    yield (f'resunet-128px-batch8-native-flip{int(flip)}', make_native_probability_step(model, preprocessing, flip),
           state, batch)
  yield from scorer_cases(model, variables, preprocessing, batch['image'])


def scorer_cases(segmenter, segmenter_variables, preprocessing, images):
  """The programs `inference.Scorer` compiles for `predict`, `gate`, `ensemble` and the Spark job: its
  own jitted methods, called on stand-in runs that hold only what those methods read (a
  classifier's weights closed over, as a loaded run's are; a segmenter's members' weights stacked
  and passed as an argument, as `Scorer` passes them): a classifier alone (probability and Grad-CAM) and a
  segmenter's native pixel probabilities with and without flip averaging."""
  from types import SimpleNamespace

  import jax
  import jax.numpy as jnp

  from jaxbrain.data import Preprocessing
  from jaxbrain.inference import Scorer
  from jaxbrain.models import create_model

  def run(model, variables, preprocessing):
    task = SimpleNamespace(flip_average=False, score_with_mask_head=False)
    return SimpleNamespace(model=model, variables=variables, preprocessing=preprocessing,
                           config=SimpleNamespace(task=task), members=())

  classifier = create_model('resnet18', num_classes=2, head_hidden=(256, 64), dropout_rate=0.25)
  variables = jax.jit(classifier.init)(jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
  alone = SimpleNamespace(classifier=run(classifier, variables, Preprocessing(128)), segmenter=None)
  yield 'scorer-resnet18-128px-batch8-classify', lambda _, images: Scorer._classify_batch(alone, images), None, images
  segmenting = SimpleNamespace(segmenter=run(segmenter, segmenter_variables, preprocessing))
  weights = jax.tree.map(lambda leaf: leaf[None], segmenter_variables)  # one member, stacked as Scorer stacks them
  for flip in (False, True):
    yield (f'scorer-resunet-128px-batch8-segment-flip{int(flip)}',
           lambda weights, images, flip=flip: Scorer._segment_batch(segmenting, images, flip, weights), weights, images)


def main() -> None:
  import jaxbrain
  jaxbrain.configure_cpu()
  out = Path(sys.argv[1])
  out.mkdir(parents=True, exist_ok=True)
  for name, step, state, batch in cases():
    text = program_text(step, state, batch)
    (out / f'{name}.hlo').write_text(text)
    print(name, hashlib.sha256(text.encode()).hexdigest()[:16], flush=True)


if __name__ == '__main__':
  main()
