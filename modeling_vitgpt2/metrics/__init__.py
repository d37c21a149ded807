"""How runs are scored: COCO caption metrics as an `evaluate` script (coco_caption.py), answer accuracy by question
type (answer_accuracy.py), and a reader's CER, WER and exact lines (reading.py)."""
