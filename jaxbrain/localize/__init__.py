"""The commands on trained runs: `predict` (scans in, labels, masks and pages out), `gate` (detect,
then localize: the gate chosen on validation) and `evaluate` (predictions scored against the truth)."""

__all__ = ['evaluate', 'gate', 'predict']  # the three modules, one command each
