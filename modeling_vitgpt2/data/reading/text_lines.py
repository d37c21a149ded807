"""`builtin:text-lines`: lines of real prose (corpus.py) drawn in real fonts (fonts.py) with random degradations.

Splits, deterministic from the seed:
- `train`: spans of 8-64 characters (whole words) from the training documents, each in a random training font at a
  random height (12-40 px) and degradation (render.py); and 3% blank lines (paper, noise, uneven light: no text)
  whose caption is "", so that the reader learns to write nothing where nothing is written;
- `validation`: lines of the validation documents, drawn like training;
- `test`: lines of the test documents (text never seen in training), clean, 32 px, in the training fonts;
- `test_unseen_fonts`: the same test text, clean, 32 px, in fonts training never sees.
Documents are country profiles; each belongs to one split, so no sentence crosses from training into a test.
Each line is drawn from its own random stream (seed, split, index), in parallel where there are cores to spare.
"""

import io
import multiprocessing
import os
import random
import textwrap

import datasets
from tqdm.auto import tqdm

from .corpus import load_documents
from .fonts import TRAIN_FONTS, UNSEEN_FONTS, font_paths
from .render import CONDITIONS, random_degradation, render_blank, render_line

EVAL_LINE_WIDTH = 48  # characters per line when a test document is wrapped
TEST_SHARE, VALIDATION_SHARE = 0.1, 0.05
BLANK_SHARE = 0.03  # of training lines


def split_documents(documents: dict[str, str], seed: int) -> dict[str, list[str]]:
    codes = sorted(documents)
    random.Random(seed).shuffle(codes)
    test_count, validation_count = round(TEST_SHARE * len(codes)), round(VALIDATION_SHARE * len(codes))
    return {
        "test": [documents[code] for code in codes[:test_count]],
        "validation": [documents[code] for code in codes[test_count : test_count + validation_count]],
        "train": [documents[code] for code in codes[test_count + validation_count :]],
    }


def random_span(documents: list[str], rng: random.Random, shortest: int = 8, longest: int = 64) -> str:
    """Whole words from a random place in a random document, as many as fit in a random length."""
    words = rng.choice(documents).split(" ")
    start, limit = rng.randrange(len(words)), rng.randint(shortest, longest)
    span = words[start]
    for word in words[start + 1 :]:
        if len(span) + 1 + len(word) > limit:
            break
        span += " " + word
    return span[:longest]


def wrapped_lines(documents: list[str], count: int, width: int = EVAL_LINE_WIDTH) -> list[str]:
    """The first `count` lines of the documents wrapped at `width` characters, taken round-robin across documents."""
    per_document = [textwrap.wrap(document, width) for document in documents]
    lines, depth = [], 0
    while len(lines) < count and any(depth < len(wrapped) for wrapped in per_document):
        lines += [wrapped[depth] for wrapped in per_document if depth < len(wrapped)]
        depth += 1
    return lines[:count]


def _png(image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _draw(job) -> tuple[dict, str]:
    """One line of a split: its own random stream (seed, split, index), so the result is the same whichever
    process draws it, in whatever order."""
    seed, split, index, text, fonts, names, degradation = job
    rng = random.Random(f"{seed}-{split}-{index}")
    font = rng.randrange(len(fonts))
    degradation = degradation or random_degradation(rng)
    if text:
        image = render_line(text, fonts[font], degradation, rng)
    else:
        image = render_blank(rng.randint(4, 40) * degradation.height, degradation, rng)
    return _png(image), names[font]


def _split(seed, split, texts, fonts, names, degradation=None) -> datasets.Dataset:
    """`texts` drawn in `fonts` (one at random per line) with `degradation`, or a random one per line."""
    jobs = [(seed, split, index, text, fonts, names, degradation) for index, text in enumerate(texts)]
    progress = dict(total=len(jobs), desc=f"drawing {split} lines", leave=False)
    workers = os.cpu_count() or 1  # each line is its own job: a GPU machine's 16 cores draw 8x what 2 do
    if workers > 1 and len(jobs) >= 1000:
        with multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers) as pool:
            drawn = list(tqdm(pool.imap(_draw, jobs, chunksize=256), **progress))
    else:
        drawn = [_draw(job) for job in tqdm(jobs, **progress)]
    features = datasets.Features(
        {"image": datasets.Image(), "captions": datasets.Value("string"), "font": datasets.Value("string")}
    )
    rows = {"image": [image for image, _ in drawn], "captions": list(texts), "font": [font for _, font in drawn]}
    return datasets.Dataset.from_dict(rows, features=features)


def load_text_lines_dataset(train_size: int = 30000, eval_size: int = 400, seed: int = 0) -> datasets.DatasetDict:
    documents = split_documents(load_documents(), seed)
    train_fonts, unseen_fonts = font_paths(TRAIN_FONTS), font_paths(UNSEEN_FONTS)
    train_names, unseen_names = [f[0] for f in TRAIN_FONTS], [f[0] for f in UNSEEN_FONTS]
    rng = random.Random(seed)
    train_texts = [
        random_span(documents["train"], rng) if rng.random() >= BLANK_SHARE else "" for _ in range(train_size)
    ]
    test_texts = wrapped_lines(documents["test"], eval_size)
    clean = CONDITIONS["clean 32px"]
    return datasets.DatasetDict({
        "train": _split(seed, "train", train_texts, train_fonts, train_names),
        "validation": _split(
            seed, "validation", wrapped_lines(documents["validation"], eval_size), train_fonts, train_names
        ),
        "test": _split(seed, "test", test_texts, train_fonts, train_names, clean),
        "test_unseen_fonts": _split(seed, "test_unseen_fonts", test_texts, unseen_fonts, unseen_names, clean),
    })  # fmt: skip
