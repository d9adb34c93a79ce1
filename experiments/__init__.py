"""Experiment entry points: `python -m experiments.table1`, `experiments.debias_table`, ..."""
