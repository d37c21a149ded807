"""The reading data: real text (corpus.py) rendered in real fonts (fonts.py, render.py) into the built-in
`builtin:text-lines` (text_lines.py). What a reader needs at inference (line images, pages, CTC-guided decoding)
lives in the flat remote-code modules of the package."""
