"""The overlays evaluator draws the masks the run's chosen rule makes."""
import numpy as np
from PIL import Image

from jaxbrain.evaluators import overlays
from jaxbrain.folders import RunDir
from jaxbrain.data.arrays import TestSlices


def test_overlays_show_the_chosen_rules_mask_not_the_raw_probabilities(tmp_path):
  """Two slices whose chosen-rule masks (`outputs['mask']`) differ from `mask_probability > 0.5`
  everywhere. Catches overlays drawn from the raw model-resolution probabilities, which `predict`
  (and the run's own test figures) never show."""
  mask = np.zeros((2, 256, 256), bool)
  mask[:, 100:140, 100:140] = True
  test = TestSlices(images=np.full((2, 256, 256, 3), 100, np.uint8), true_masks=mask, labels=np.array([1, 1]),
                    patients=np.array(['A', 'A']), slices=np.array([3, 4]),
                    outputs={'mask': mask, 'mask_probability': np.where(mask[:, ::4, ::4], 0.1, 0.9)},
                    heatmaps=None, batch_size=2)
  assert overlays.evaluate(test, RunDir(tmp_path)) == {}
  for number in (3, 4):
    drawn = np.asarray(Image.open(tmp_path / 'overlays' / f'A_{number}.png'))
    red = (drawn[..., 0] > drawn[..., 1] + 40) & (drawn[..., 0] > drawn[..., 2] + 40)
    np.testing.assert_array_equal(red[105:135, 105:135], True)
    assert not red[:90].any() and not red[150:].any()
