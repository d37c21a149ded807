"""OCR metrics as the field computes them, by jiwer: character error rate (edits over reference characters) and word
error rate (over reference words), micro-averaged over all lines, and the share of lines read exactly."""

import jiwer

READING_METRICS = ("cer", "wer", "exact_lines")


def reading_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    if len(predictions) != len(references) or not references:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if any(not reference.strip() for reference in references):
        raise ValueError("a reference line is empty: CER and WER divide by the reference's length")
    return {
        "cer": jiwer.cer(references, predictions),
        "wer": jiwer.wer(references, predictions),
        "exact_lines": sum(p == r for p, r in zip(predictions, references)) / len(references),
    }
