"""Where a run stands, as its checkpoints record it: `Progress`, the resume record every
checkpoint's `progress` item holds, and `Candidate`, the best state not yet written."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Progress:
  """How far a run has come: `epoch` epochs finished, `batch` batches of the next one done with
  their training metrics' `sums`, the `best` validation score so far and the (1-based) epoch that
  scored it, and `validate`: for a checkpoint written at an epoch's end before that epoch's
  validation was read, that epoch's record (its training sums and seconds), so that a resume
  validates the state first, as the uninterrupted run did."""
  epoch: int = 0
  batch: int = 0
  best: float | None = None
  best_epoch: int | None = None
  sums: dict = dataclasses.field(default_factory=dict)
  validate: dict | None = None

  def to_json(self) -> dict:
    """The checkpoint's JSON record (`validate` only when set, as runs have always written it)."""
    record = {'epoch': self.epoch, 'batch': self.batch, 'best': self.best, 'best_epoch': self.best_epoch,
              'sums': self.sums}
    return record if self.validate is None else {**record, 'validate': self.validate}

  @classmethod
  def from_json(cls, record: dict) -> Progress:
    return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})

  def improved_by(self, score: float) -> bool:
    """Whether validation `score` (NaN: never) beats the best so far."""
    return score == score and (self.best is None or score > self.best)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """The best state so far, kept on the device until its checkpoint is written, with its record."""
  state: object
  progress: Progress
