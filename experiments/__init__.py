"""One module per experiment: `python -m experiments.exp20 --help`."""
