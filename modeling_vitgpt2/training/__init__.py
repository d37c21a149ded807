"""What train.py builds and shows: small models from scratch for the embedded jobs and the tests (scratch.py) and
the end-of-run report (report.py)."""
