import numpy as np
import pytest

from jaxbrain.data import SliceArrays, check_batch_size, eval_batches, train_batches


def fake(n=23):
  return SliceArrays(
      image=np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8),
      mask=np.zeros((n, 4, 4), np.uint8), label=np.arange(n) % 2, patient=np.array([f'P{i // 5}' for i in range(n)]),
      institution=np.array(['XX'] * n), slice=np.arange(n),
      path=np.array([f'P/P_{i}.png' for i in range(n)]))


def test_eval_covers_every_example_exactly_once():
  data = fake()
  indices = np.arange(3, 20)  # 17 examples, batch 8 -> 8, 8, 1 (+7 padding)
  seen = []
  batches = list(eval_batches(data, indices, 8))
  assert [b['image'].shape[0] for b in batches] == [8, 8, 8]
  for batch in batches:
    seen += list(batch['index'][batch['valid']])
    np.testing.assert_array_equal(batch['image'][:, 0, 0, 0], batch['index'])
  assert seen == list(indices)
  assert batches[-1]['valid'].sum() == 1


def test_train_batches_shuffle_per_epoch_and_are_full():
  data = fake()
  indices = np.arange(23)
  epoch0 = list(train_batches(data, indices, 4, seed=0, epoch=0))
  epoch1 = list(train_batches(data, indices, 4, seed=0, epoch=1))
  assert len(epoch0) == 5 and all(b['label'].shape == (4,) for b in epoch0)
  flat0 = np.concatenate([b['index'] for b in epoch0])
  assert len(set(flat0)) == 20 and not np.array_equal(flat0, np.concatenate([b['index'] for b in epoch1]))
  again = np.concatenate([b['index'] for b in train_batches(data, indices, 4, seed=0, epoch=0)])
  np.testing.assert_array_equal(flat0, again)
  resumed = np.concatenate([b['index'] for b in train_batches(data, indices, 4, seed=0, epoch=0, start_batch=2)])
  np.testing.assert_array_equal(flat0[8:], resumed)


def test_batch_size_must_split_across_devices():
  check_batch_size(8, 8)
  with pytest.raises(ValueError, match='multiple of the 8 devices'):
    check_batch_size(12, 8)


def test_dispatch_plan_covers_each_batch_once_and_resumes_on_the_same_dispatches():
  """Catches a batch skipped or run twice, a scan running past the epoch's end, and a resumed run
  that dispatches differently from an uninterrupted one (it would not be bit-exact)."""
  from jaxbrain.data.batching import dispatch_plan
  plan = dispatch_plan(11, 4)
  assert plan == [(0, 4), (4, 4), (8, 1), (9, 1), (10, 1)]
  assert [b for first, count in plan for b in range(first, first + count)] == list(range(11))
  for first, _ in plan:  # resuming at any dispatch boundary gives the rest of the same plan
    assert dispatch_plan(11, 4, first) == [d for d in plan if d[0] >= first]
  assert dispatch_plan(11, 4, 2) == [(2, 1), (3, 1), (4, 4), (8, 1), (9, 1), (10, 1)]  # off a boundary
  assert dispatch_plan(5, 1) == [(b, 1) for b in range(5)]


def test_tumor_share_keeps_every_tumor_slice_and_draws_tumor_free_ones_afresh_each_epoch():
  """Catches a tumor slice dropped from an epoch, a share not met, a tumor-free draw repeated within an
  epoch or frozen across epochs (the epochs would see one fixed subset), an order that is not a pure
  function of (seed, epoch) (resuming would not be exact), and `epoch_length` disagreeing with the
  order the loop runs (the schedule and the step count would be off)."""
  from jaxbrain.data.batching import epoch_length, epoch_order
  is_tumor = np.array([1] * 6 + [0] * 24)  # natural share 0.2
  indices = np.arange(2, 30)  # 4 tumor, 24 tumor-free
  epochs = [epoch_order(indices, 0, epoch, is_tumor, tumor_share=0.5) for epoch in range(3)]
  for order in epochs:
    assert len(order) == len(set(order)) == epoch_length(indices, is_tumor, 0.5) == 8
    assert set(order) <= set(indices) and set(order[is_tumor[order] == 1]) == {2, 3, 4, 5}
  assert len({frozenset(order) for order in epochs}) > 1
  np.testing.assert_array_equal(epochs[1], epoch_order(indices, 0, 1, is_tumor, tumor_share=0.5))
  third = epoch_order(indices, 0, 0, is_tumor, tumor_share=1 / 3)
  assert len(third) == epoch_length(indices, is_tumor, 1 / 3) == 12 and is_tumor[third].sum() == 4
  # a share below the natural one keeps every slice; 0 is the plain shuffle
  assert sorted(epoch_order(indices, 0, 0, is_tumor, tumor_share=0.1)) == list(indices)
  np.testing.assert_array_equal(epoch_order(indices, 0, 0), np.random.default_rng([0, 0]).permutation(indices))


def test_tumor_share_without_tumor_slices_is_refused():
  """Catches an epoch of zero slices (the run would train on nothing) when no training slice has a tumor."""
  from jaxbrain.data.batching import epoch_length
  with pytest.raises(ValueError, match='--tumor-share 0.5: the training patients have no tumor slices'):
    epoch_length(np.arange(5), np.zeros(5, int), 0.5)
