"""What train.py builds and shows: small models from scratch for the embedded jobs and the tests (scratch.py), the
per-cell loss the questions job trains its image tokens with (cell_supervision.py) and the end-of-run report
(report.py)."""
