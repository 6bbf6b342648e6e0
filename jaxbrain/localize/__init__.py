"""The commands on trained runs: `predict` (scans in, labels, masks and pages out), `gate` (detect,
then localize: the gate chosen on validation) and `evaluate` (predictions scored against the truth)."""
