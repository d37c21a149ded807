"""Training a reader: real text (corpus.py) rendered in real fonts (fonts.py, render.py) into the built-in
`builtin:text-lines` data (text_lines.py), and the OCR metrics it is scored by (metrics.py). None of this ships with
a checkpoint; what a reader needs at inference (line images, pages, CTC-guided decoding) lives in the flat
remote-code modules of the package above."""
