"""Caption and question datasets for training: loading (Hub, imagefolder, JSONL/CSV, built-in) and validation that
skips and counts bad examples (collator.py turns the examples into model inputs).

Every loaded dataset has the columns `image` and `captions` (the target: a caption, an answer, or a list of them),
and `prompt` when the data asks questions (or a fixed `--prompt` is given); a `question_type` column, where the data
has one, splits answer accuracy by type, and a `cells` column (what each cell of the image's grid holds: the built-in
scenes' training split) feeds the per-cell loss (training/cell_supervision.py)."""

import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import datasets

from ..processing_vitgpt2 import ImageLoadError, load_image

logger = logging.getLogger(__name__)

BUILTIN = "builtin:shapes"
CELLS_COLUMN = "cells"
EXTRA_COLUMNS = ("question_type", CELLS_COLUMN)  # kept under their own names where a split has them
BUILTIN_VQA = "builtin:shapes-vqa"
BUILTIN_TEXT_LINES = "builtin:text-lines"
IMAGE_COLUMN_GUESSES = ("image", "img", "picture", "file_name", "image_path", "filepath")
CAPTION_COLUMN_GUESSES = ("captions", "caption", "sentences", "text", "raw", "label")


class DatasetError(ValueError):
    """A dataset that cannot be trained on; raised at start-up with what is wrong."""


def _load_raw(name: str, config: str | None, streaming: bool, seed: int, builtin: dict, image_column=None):
    if name in (BUILTIN, BUILTIN_VQA):
        from .shapes import load_shapes_dataset, load_shapes_vqa_dataset

        sizes = {"train_size": builtin["train_size"], "eval_size": builtin["eval_size"]}
        if name == BUILTIN:
            return _streamed(load_shapes_dataset(seed=seed, **sizes), streaming)
        return _streamed(load_shapes_vqa_dataset(seed=seed, caption_share=builtin["caption_share"], **sizes), streaming)
    if name == BUILTIN_TEXT_LINES:
        from .reading.corpus import CorpusError
        from .reading.fonts import FontError
        from .reading.text_lines import load_text_lines_dataset

        try:
            lines = load_text_lines_dataset(builtin["train_size"], builtin["eval_size"], seed=seed)
        except (CorpusError, FontError) as error:
            raise DatasetError(f"--dataset {name}: {error}") from error
        return _streamed(lines, streaming)
    if name.endswith((".jsonl", ".json", ".csv")):
        if not os.path.isfile(name):
            raise DatasetError(f"--dataset {name}: no such file")
        builder = "csv" if name.endswith(".csv") else "json"
        dataset = datasets.load_dataset(builder, data_files={"train": name}, streaming=streaming)
        return _resolve_relative_paths(dataset, os.path.dirname(os.path.abspath(name)), image_column)
    if os.path.isdir(name):
        if not any(os.path.exists(os.path.join(name, f)) for f in ("dataset_dict.json", "state.json")):
            return datasets.load_dataset("imagefolder", data_dir=name, streaming=streaming)
        saved = datasets.load_from_disk(name)  # a save_to_disk folder: a DatasetDict, or one Dataset as "train"
        saved = saved if isinstance(saved, datasets.DatasetDict) else datasets.DatasetDict({"train": saved})
        return _streamed(saved, streaming)
    if os.path.sep in name and not os.path.exists(name):
        raise DatasetError(f"--dataset {name}: no such file or folder")
    try:
        return datasets.load_dataset(name, config, streaming=streaming)
    except OSError as error:  # not found, or no network (FileNotFoundError, ConnectionError)
        raise DatasetError(f"--dataset {name}: not a local path, and not loadable from the Hub ({error})") from error


def _streamed(dataset: datasets.DatasetDict, streaming: bool):
    if not streaming:
        return dataset
    return datasets.IterableDatasetDict({split: part.to_iterable_dataset() for split, part in dataset.items()})


def _resolve_relative_paths(dataset, base: str, image_column=None):
    """Image paths in a JSONL/CSV file are relative to that file."""

    def resolve(example, column):
        value = example[column]
        if isinstance(value, str) and not value.startswith(("http://", "https://")) and not os.path.isabs(value):
            example[column] = os.path.join(base, value)
        return example

    columns = dataset["train"].column_names or []
    column = image_column if image_column in columns else next((c for c in IMAGE_COLUMN_GUESSES if c in columns), None)
    return dataset if column is None else dataset.map(resolve, fn_kwargs={"column": column})


def _pick_column(columns, wanted: str | None, guesses, what: str, source: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DatasetError(f"{source}: no {what} column {wanted!r}; the columns are {columns}")
        return wanted
    for guess in guesses:
        if guess in columns:
            return guess
    raise DatasetError(
        f"{source}: cannot tell which column holds the {what}; the columns are {columns} (pass --{what}_column)"
    )


def load_caption_dataset(args, seed: int = 0):
    """The dataset named by `args.dataset` with the columns `image` (undecoded), `captions` (str or list) and, for
    prompted data, `prompt` (and `question_type` and `cells` where the data has them)."""
    builtin = {
        "train_size": args.builtin_train_size,
        "eval_size": args.builtin_eval_size,
        "caption_share": args.builtin_caption_share,
    }
    dataset = _load_raw(args.dataset, args.dataset_config, args.streaming, seed, builtin, args.image_column)
    if args.train_split not in dataset:
        raise DatasetError(f"--dataset {args.dataset}: no split {args.train_split!r}; the splits are {list(dataset)}")
    columns = dataset[args.train_split].column_names
    if columns is None:  # a streaming dataset whose features are unknown until read
        columns = list(next(iter(dataset[args.train_split])).keys())
    image_column = _pick_column(columns, args.image_column, IMAGE_COLUMN_GUESSES, "image", args.dataset)
    caption_column = _pick_column(columns, args.caption_column, CAPTION_COLUMN_GUESSES, "caption", args.dataset)
    prompt_column = args.prompt_column or ("prompt" if "prompt" in columns and args.prompt is None else None)
    if prompt_column is not None:
        if args.prompt is not None:
            raise DatasetError("--prompt and --prompt_column exclude each other: one fixed prompt, or one per example")
        prompt_column = _pick_column(columns, prompt_column, (), "prompt", args.dataset)
    renames = {image_column: "image", caption_column: "captions", prompt_column: "prompt"}
    kept = [column for column in renames if column is not None]
    for split, part in dataset.items():
        extra = [column for column in EXTRA_COLUMNS if column in (part.column_names or []) and column not in kept]
        dataset[split] = part.select_columns(kept + extra)
    for old, new in renames.items():
        if old is not None and old != new:
            dataset = dataset.rename_column(old, new)
    if args.prompt:
        dataset = dataset.map(lambda example: {"prompt": args.prompt})
    return dataset.cast_column("image", datasets.Image(decode=False))


def prompts_of(dataset) -> list[str]:
    """Each example's (first) prompt ("" where it has none: a caption)."""
    if "prompt" not in (dataset.column_names or []):
        return [""] * len(dataset)
    firsts = (prompt[0] if isinstance(prompt, (list, tuple)) and prompt else prompt for prompt in dataset["prompt"])
    return [(prompt or "").strip() for prompt in firsts]


def task_list(example) -> list[tuple[str, str]]:
    """The (prompt, target) pairs an example offers: each of its captions after its prompt, or, where `prompt` is a
    list, the prompt and the caption at the same index — a row that carries several tasks, such as a scene's caption
    and questions about it (training draws one of them each time it sees the row)."""
    prompt, captions = example.get("prompt"), example["captions"]
    if captions == "":  # a reader's blank line: the target is to write nothing (validation keeps these for readers)
        return [((prompt or "").strip(), "")]
    if isinstance(prompt, (list, tuple)):
        captions = [captions] if isinstance(captions, str) else captions
        return [((p or "").strip(), c.strip()) for p, c in zip(prompt, captions) if isinstance(c, str)]
    return [((prompt or "").strip(), caption) for caption in as_caption_list(captions)]


def as_caption_list(captions) -> list[str]:
    if captions is None:
        return []
    if isinstance(captions, str):
        captions = [captions]
    return [caption.strip() for caption in captions if isinstance(caption, str) and caption.strip()]


def with_caption_lengths(dataset: datasets.Dataset) -> datasets.Dataset:
    """Adds `length` (words in the first caption), which the Trainer's length-grouped samplers read
    (`--train_sampling_strategy group_by_length`): batches of captions of similar length carry less padding, but
    where length tracks content (the built-in scenes: one group of shapes or two) such batches hurt training."""

    def lengths(batch):
        return {"length": [len((as_caption_list(captions) or [""])[0].split()) for captions in batch]}

    return dataset.map(lengths, input_columns="captions", batched=True, desc="caption lengths")


@dataclass
class SkipCounter:
    """What validation skipped, by reason; `strict` turns the first problem into an error."""

    strict: bool = False
    allow_blank: bool = False  # a reader learns that a line without text reads "": an empty caption is valid
    reasons: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)
    seen: set = field(default_factory=set)  # a stream is read once per epoch: count each bad example once

    def __call__(self, example) -> bool:
        problem = None
        if not as_caption_list(example["captions"]) and not (self.allow_blank and example["captions"] == ""):
            problem = "empty or missing caption"
        else:
            try:
                load_image(example["image"])
            except ImageLoadError as error:
                problem = f"unreadable image: {error}"
        if problem is None:
            return True
        if self.strict:
            raise DatasetError(f"bad example (--strict): {problem}")
        image = example["image"] or {}
        key = (image.get("path"), hash(image.get("bytes")), repr(example["captions"]))
        if key in self.seen:
            return False
        self.seen.add(key)
        self.reasons[problem.split(":")[0]] += 1
        if len(self.examples) < 5:
            self.examples.append(problem)
        return False

    def report(self, split: str, skipped: int | None = None) -> str:
        total = sum(self.reasons.values()) if skipped is None else skipped
        if not total:
            return f"{split}: no bad examples"
        detail = ", ".join(f"{count} {reason}" for reason, count in self.reasons.items()) or "counted in an earlier run"
        shown = "".join(f"\n  e.g. {example}" for example in self.examples)
        return f"{split}: skipped {total} bad examples ({detail}){shown}"


def drop_bad_examples(dataset, split: str, strict: bool, allow_blank: bool = False):
    """Drops examples with an unreadable image or no caption (a reader's "" caption, a blank line, is kept where
    `allow_blank`); returns (dataset, counter, skipped count or None)."""
    counter = SkipCounter(strict=strict, allow_blank=allow_blank)
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.filter(counter), counter, None  # counted while streaming
    before = len(dataset)
    dataset = dataset.filter(counter, desc=f"checking {split} images")
    if len(dataset) == 0:
        raise DatasetError(f"{split}: no usable examples ({counter.report(split, before)})")
    skipped = before - len(dataset)
    logger.log(logging.WARNING if skipped else logging.INFO, counter.report(split, skipped))
    return dataset, counter, skipped


def references_of(dataset) -> list[list[str]]:
    return [as_caption_list(captions) for captions in dataset["captions"]]


def materialise(dataset, limit: int | None) -> datasets.Dataset:
    """A map-style copy of (the first `limit` examples of) a split — evaluation needs lengths and references."""
    if isinstance(dataset, datasets.IterableDataset):
        rows = list(dataset.take(limit) if limit else dataset)
        features = (
            datasets.Features({"image": datasets.Image(decode=False), "captions": dataset.features["captions"]})
            if dataset.features
            else None
        )
        return datasets.Dataset.from_list(rows, features=features)
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset
