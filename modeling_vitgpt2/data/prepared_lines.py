"""A reader's lines prepared once, before training: straightened, framed and scaled by the processor on every core,
instead of in the training loop once per epoch (that per-line work was 10% of a reader's step on 2 cores). The
collator then only pads them (`VitGpt2LineImageProcessor.pad_lines`), to the same pixels the processor gives."""

import os

import datasets
import numpy as np

from ..processing_vitgpt2 import load_image

LINE_COLUMN = "line"


def with_prepared_lines(dataset: datasets.Dataset, image_processor, split: str) -> datasets.Dataset:
    """Adds `line` (the prepared line's uint8 pixels, `image_processor.height` rows, as bytes) and `length` (its
    width in px, what a batch's vision pass pays for: the length-grouped sampler then batches lines of one width,
    where grouping by words left a third of the pixels it read padding)."""

    def prepare(images):
        lines = [image_processor.prepare_line(load_image(image)) for image in images]
        return {LINE_COLUMN: [line.tobytes() for line in lines], "length": [line.shape[1] for line in lines]}

    workers = os.cpu_count() or 1
    return dataset.map(
        prepare,
        input_columns="image",
        batched=True,
        batch_size=64,
        num_proc=workers if workers > 1 and len(dataset) >= 1000 else None,
        desc=f"preparing {split} lines",
    )


def prepared_lines(examples: list[dict], height: int) -> list[np.ndarray]:
    return [np.frombuffer(example[LINE_COLUMN], np.uint8).reshape(height, -1) for example in examples]
