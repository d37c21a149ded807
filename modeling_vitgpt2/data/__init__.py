"""What trains a model and never ships with one: loading and checking datasets (loading.py), the collator that turns
examples into model inputs (collator.py), the frozen tower's feature cache (feature_cache.py), a reader's lines
prepared once before training (prepared_lines.py), and the built-in data: scenes with captions and questions
(shapes.py) and text lines in real fonts (reading/)."""
