"""The one inference path (`jaxbrain/inference.py`): nothing else computes a model's probabilities
or turns them into decisions, and the decisions follow their stated rules."""
import ast
from pathlib import Path

import numpy as np
import pytest

import jaxbrain
from jaxbrain.inference import slice_decisions
from jaxbrain.postprocess import MaskRule

PACKAGE = Path(jaxbrain.__file__).parent
INFERENCE_METHODS = ('probability', 'mask_logits')  # model methods only the inference module applies
INFERENCE_CALLS = ('native_logits', 'apply_rule')  # functions only the inference module calls
# where those are defined (and, for apply_rule, checked against choose_rule), not computed for a caller
DEFINED_IN = {'data/transforms.py', 'postprocess.py', 'inference.py'}


def inference_outside(root: Path) -> list[str]:
  """`file:line what` for every `method='probability' | 'mask_logits'` argument and every call of
  `native_logits` or `apply_rule` in modules under `root` other than the inference module."""
  found = []
  for path in sorted(root.rglob('*.py')):
    relative = path.relative_to(root).as_posix()
    if relative in DEFINED_IN:
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.keyword) and node.arg == 'method' and isinstance(node.value, ast.Constant) \
          and node.value.value in INFERENCE_METHODS:
        found.append(f'{relative}:{node.value.lineno} method={node.value.value!r}')
      elif isinstance(node, ast.Call):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, 'id', None)
        if name in INFERENCE_CALLS:
          found.append(f'{relative}:{node.lineno} {name}()')
  return found


def test_only_the_inference_module_computes_probabilities_and_decisions():
  """Catches a second copy of inference (a command computing `probability` or `mask_logits` itself,
  resizing logits to the native resolution, or applying a mask rule), the duplication that let a
  run's own figures and `predict`'s drift apart."""
  assert inference_outside(PACKAGE) == []


def test_the_check_sees_a_second_inference_path(tmp_path):
  """The check itself can fail: a module applying a rule and the probability method is reported."""
  (tmp_path / 'command.py').write_text('def f(m, v, x, r, p, s):\n  m.apply(v, x, method="mask_logits")\n'
                                       '  return apply_rule(r, p, s)\n')
  assert sorted(inference_outside(tmp_path)) == ["command.py:2 method='mask_logits'", 'command.py:3 apply_rule()']


def _blob(size: int, at: int, n: int = 16) -> np.ndarray:
  pixels = np.zeros((n, n))
  pixels[at:at + size, at:at + size] = 0.9
  return pixels


def test_slice_decisions_by_rule_threshold_and_gate():
  """Three slices: a large tumor, a small one, none. Catches a segmenter's label taken from the
  probability instead of its post-processed mask (the small tumor is removed by min_pixels though
  its probability is high), a classifier's label from the masks, and a gate that empties masks at
  or above it."""
  pixels = np.stack([_blob(6, 2), _blob(2, 2), np.zeros((16, 16))])
  probability = np.array([0.9, 0.9, 0.1])
  rule = MaskRule(threshold=0.3, min_pixels=10)
  alone = slice_decisions(probability, pixels=pixels, rule=rule)
  assert alone.label.tolist() == [1, 0, 0] and alone.mask.sum(axis=(1, 2)).tolist() == [36, 0, 0]
  classifier = slice_decisions(np.array([0.7, 0.2, 0.6]), threshold=0.6)
  assert classifier.label.tolist() == [1, 0, 1] and classifier.mask is None
  paired = slice_decisions(np.array([0.7, 0.9, 0.2]), threshold=0.5, pixels=np.stack([_blob(6, 2)] * 3), rule=rule,
                           gate=0.7)
  assert paired.label.tolist() == [1, 1, 0] and paired.mask.any(axis=(1, 2)).tolist() == [True, True, False]
  with pytest.raises(ValueError):
    slice_decisions(probability)


def test_a_short_last_chunk_is_padded_to_half_a_batch_and_keeps_its_rows():
  """Catches a patient's short remainder padded to a whole batch (a 23-slice patient computing 32
  slices instead of 24), more than two compiled shapes per batch size, or the chunk's own rows
  changed or reordered by the padding."""
  from jaxbrain.inference import padded

  rows = np.arange(23)[:, None] * np.ones((1, 2))
  assert [len(padded(rows[:n], 16)) for n in (1, 7, 8, 9, 16)] == [8, 8, 8, 16, 16]
  assert {len(padded(rows[:n], 16)) for n in range(1, 17)} == {8, 16}
  assert [len(padded(rows[:n], 1)) for n in (1,)] == [1] and len(padded(rows[:1], 2)) == 1
  chunk = padded(rows[16:23], 16)
  np.testing.assert_array_equal(chunk[:7], rows[16:23])
  np.testing.assert_array_equal(chunk[7:], np.repeat(rows[16:17], 1, 0))
