"""Training steps: the joint loss (the mask head's target and weight), deep supervision, and the weight average."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbrain.data import Preprocessing
from jaxbrain.models import create_model
from jaxbrain.train.state import create_train_state
from jaxbrain.train.steps import softmax_cross_entropy, make_train_step, tumor_cells
from jaxbrain.train.strategies import make_optimizer

SIZE = 64


def test_tumor_cells_mark_every_cell_holding_a_tumor_pixel():
  """Catches an average (a one-pixel tumor would give a target near 0), rows and columns swapped,
  and cells of the wrong size."""
  masks = np.zeros((1, 8, 8), np.uint8)
  masks[0, 0, 5] = 1  # one pixel in the top-right cell (rows 0-3, columns 4-7)
  masks[0, 6:8, 0:2] = 1  # a blob in the bottom-left cell
  np.testing.assert_array_equal(tumor_cells(jnp.asarray(masks), (2, 2))[0], [[0, 1], [1, 0]])
  np.testing.assert_array_equal(tumor_cells(jnp.asarray(masks), (4, 4))[0],
                                [[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])


def test_joint_loss_adds_the_weighted_mask_loss_to_the_classification_loss():
  """Catches a step that ignores the weight, trains the mask head against another target, or lets the
  mask loss replace the classification loss: the step's loss must be cross-entropy plus weight
  times the per-cell binary cross-entropy, computed here by hand (no flip, no dropout)."""
  model = create_model('resnet18', num_classes=2, mask_head=True)
  variables = model.init({'params': jax.random.key(0)}, jnp.zeros((1, SIZE, SIZE, 3)))
  assert variables['params']['mask_head']['layer4']['kernel'].shape == (1, 1, 512, 1)
  tx = make_optimizer(variables['params'], 0.01, 0.5)
  state = create_train_state(variables, tx, seed=0)
  rng = np.random.default_rng(0)
  masks = np.zeros((4, SIZE, SIZE), np.uint8)
  masks[1, 40:50, 5:20] = 1
  batch = {'image': rng.integers(0, 255, (4, SIZE, SIZE, 3), dtype=np.uint8), 'label': np.array([0, 1, 0, 0], np.int32),
           'mask': masks}
  preprocessing = Preprocessing(size=SIZE, flip=False, normalize=True)
  x = (batch['image'] / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  (logits, mask_logits), _ = model.apply(variables, jnp.asarray(x, jnp.float32), train=True, with_mask=True,
                                         mutable=['batch_stats'])
  assert mask_logits.shape == (4, 8, 8)  # 8x8-pixel cells
  target = np.zeros((4, 8, 8))
  target[1, 5:7, 0:3] = 1  # rows 40-49, columns 5-19
  by_hand = (softmax_cross_entropy(logits, batch['label']),
             optax.sigmoid_binary_cross_entropy(mask_logits, jnp.asarray(target)).mean())
  for weight in (0.0, 2.5):
    _, metrics = jax.jit(make_train_step(model, tx, preprocessing, False, mask_loss_weight=weight))(state, batch)
    np.testing.assert_allclose(metrics['loss'], by_hand[0] + weight * by_hand[1], rtol=1e-5)


def test_deep_supervision_adds_the_decoder_levels_losses():
  """Catches: deep logits sown in evaluation (wasted work) or not at the input's size, and a training
  loss that leaves them out or weighs them otherwise than (output + 1/2 nearest + 1/4 next) / 1.75."""
  from jaxbrain.models import create_segmenter
  from jaxbrain.train.steps import make_segmentation_train_step, segmentation_loss

  model = create_segmenter('residual', 4, kernels='xla', deep_supervision=2)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
  masks = np.zeros((2, 32, 32), np.float32)
  masks[:, 8:20, 10:24] = 1
  variables = jax.jit(model.init)({'params': jax.random.key(0)}, jnp.zeros((1, 32, 32, 3)))
  x = jnp.asarray(images, jnp.float32) / 255
  _, evaluated = jax.jit(lambda v, x: model.apply(v, x, mutable=['intermediates']))(variables, x)
  assert not evaluated.get('intermediates')
  logits, sown = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats', 'intermediates']))(
      variables, x)
  deepest, nearest = sown['intermediates']['deep_logits']
  assert deepest.shape == nearest.shape == (2, 32, 32)
  expected = (segmentation_loss(logits, masks) + 0.5 * segmentation_loss(nearest, masks)
              + 0.25 * segmentation_loss(deepest, masks)) / 1.75
  tx = optax.sgd(0.0)
  step = make_segmentation_train_step(model, tx, Preprocessing(size=32, flip=False, normalize=False))
  _, metrics = jax.jit(step)(create_train_state(variables, tx, 0), {'image': images, 'mask': masks})
  np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)


def test_weight_average_follows_its_recurrence_with_warm_up():
  """Catches the two terms swapped (d * new + (1 - d) * average), no warm-up (a 3-step average would
  stay near the initialization), BatchNorm statistics left out of the average, and an average taken
  before the step (of the old weights). The step here only sets the weights, so the recurrence is
  checked exactly."""
  from jaxbrain.train.steps import with_weight_average

  def setting_step(state, batch):
    value = batch['value']
    return state.replace(step=state.step + 1, params={'w': jnp.full(2, value)},
                         batch_stats={'mean': jnp.full(2, 2 * value)}), {}

  variables = {'params': {'w': jnp.zeros(2)}, 'batch_stats': {'mean': jnp.zeros(2)}}
  state = create_train_state(variables, optax.sgd(0.1), seed=0, weight_average=True)
  step = jax.jit(with_weight_average(setting_step, 0.9))
  weight = mean = 0.0
  for t, value in enumerate([1.0, 5.0, -2.0], start=1):
    state, _ = step(state, {'value': jnp.float32(value)})
    d = min(0.9, (1 + t) / (10 + t))
    weight, mean = d * weight + (1 - d) * value, d * mean + (1 - d) * 2 * value
  np.testing.assert_allclose(state.ema['params']['w'], [weight] * 2, rtol=1e-6)
  np.testing.assert_allclose(state.ema['batch_stats']['mean'], [mean] * 2, rtol=1e-6)
  assert state.inference_variables() is state.ema
  assert create_train_state(variables, optax.sgd(0.1), seed=0).ema is None


def test_evaluation_uses_the_weight_average():
  """Catches an eval step that reads the trained weights while the run averages them (validation,
  the checkpoint choice and test would then describe other weights than the run stores for predict):
  with the average set to another initialization, both tasks' eval steps must give that model's outputs."""
  from jaxbrain.models import create_segmenter
  from jaxbrain.train.steps import make_eval_step, make_segmentation_eval_step

  images = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
  preprocessing = Preprocessing(size=32, flip=False, normalize=True)
  cases = [(create_model('resnet18', num_classes=2, head_hidden=()), make_eval_step, 'probability'),
           (create_segmenter('residual', width=4), make_segmentation_eval_step, 'mask_probability')]
  for model, make_step, key in cases:
    init = jax.jit(model.init)
    trained, averaged = (init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3))) for seed in (0, 1))
    # Three states of one structure (one compilation): what each model alone gives, and the mix.
    state = lambda params, average: create_train_state(params, optax.sgd(0.1), seed=0).replace(ema=average)
    step = jax.jit(make_step(model, preprocessing))
    got, want, other = (step(state(*pair), {'image': images})[key]
                        for pair in ((trained, averaged), (averaged, averaged), (trained, trained)))
    np.testing.assert_array_equal(got, want)
    assert not np.allclose(got, other)
