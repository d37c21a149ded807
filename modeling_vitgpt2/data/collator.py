"""The collator: dataset examples (an image, a caption or an answer, maybe a prompt) -> the model's inputs."""

import random

import torch

from ..processing_vitgpt2 import load_image
from .loading import CELLS_COLUMN, task_list
from .prepared_lines import LINE_COLUMN, prepared_lines


class CaptionCollator:
    """Examples → `pixel_values` (from images, a reader's prepared lines, or cached `vision_features`) + captions.

    The prompt (if any) becomes `input_ids` and the target `labels`: the model reads the target after the prompt
    while training, and Seq2SeqTrainer's `generate(**batch)` continues the prompt without seeing it. Training draws
    one of an example's captions at random each time it is seen (once per epoch); evaluation uses the first (metrics
    score against all of them). Python's `random` is seeded and checkpointed by the Trainer, so resumed runs draw the
    same captions.

    With `tasks_per_image` > 1, training draws up to that many distinct tasks of each example (one caption, if it has
    one, first; the rest prompted, such as questions) and packs them after one reading of the image: `input_ids`,
    `attention_mask` and `labels` are then images x tasks x tokens (packing_vitgpt2.py).

    With `cell_labels`, training batches also carry the examples' `cells` as `cell_labels` (images x cells x
    attributes) for the per-cell loss (training/cell_supervision.py).
    """

    def __init__(
        self,
        processor,
        max_caption_length: int,
        feature_cache=None,
        token_dropout: float = 0.0,
        pad_to_multiple_of: int | None = None,
        tasks_per_image: int = 1,
        cell_labels: bool = False,
    ):
        if tasks_per_image < 1:
            raise ValueError(f"tasks_per_image={tasks_per_image}: at least 1")
        self.processor = processor
        self.tasks_per_image = tasks_per_image
        self.cell_labels = cell_labels
        self.max_caption_length = max_caption_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.feature_cache = feature_cache
        self.token_dropout = token_dropout
        self.training = True

    def __call__(self, examples):
        tasks = [task_list(example) for example in examples]
        if self.training and self.tasks_per_image > 1:
            batch = self._packed_tasks([self._draw_tasks(options) for options in tasks])
        else:
            batch = self._tokenize([random.choice(options) if self.training else options[0] for options in tasks])
        if self.training and self.token_dropout:
            # Replace some of the target's *input* tokens (labels stay) with random ones: the next word must then
            # come from the image more than from the words before it (on the built-in data: test exact match 68% ->
            # 77%). The prompt is left as written.
            labels = batch["labels"]
            generator = torch.Generator().manual_seed(random.getrandbits(63))
            noise = torch.rand(labels.shape, generator=generator) < self.token_dropout
            replacement = torch.randint(len(self.processor.tokenizer), labels.shape, generator=generator)
            batch["target_input_ids"] = torch.where(noise & (labels != -100), replacement, labels.clamp(min=0))
        if self.training and self.cell_labels:
            batch["cell_labels"] = torch.tensor([example[CELLS_COLUMN] for example in examples])
        if self.feature_cache is not None:
            batch["vision_features"] = self.feature_cache.features([example["image"] for example in examples])
        elif LINE_COLUMN in examples[0]:
            image_processor = self.processor.image_processor
            batch.update(image_processor.pad_lines(prepared_lines(examples, image_processor.height)))
        else:
            images = [load_image(example["image"]) for example in examples]
            batch.update(self.processor(images=images))  # pixel_values, and a reader's pixel_mask
        return batch

    def _tokenize(self, tasks: list[tuple[str, str]]) -> dict:
        """(prompt, target) pairs -> `labels` (right-padded targets) and, where any prompt is set, `input_ids` and
        `attention_mask` (left-padded prompts)."""
        prompts, targets = zip(*tasks)
        batch = self.processor.tokenize_targets(
            targets, max_length=self.max_caption_length, pad_to_multiple_of=self.pad_to_multiple_of
        )
        batch.update(self.processor.tokenize_prompts(list(prompts)))
        return batch

    def _draw_tasks(self, options: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Up to `tasks_per_image` distinct tasks: one caption (unprompted) first, if there is one, then prompted ones.
        Only one caption: a packed task's first token is predicted from the token before it, and only the first
        task follows the image directly."""
        captions = [task for task in options if not task[0]]
        prompted = list(dict.fromkeys(task for task in options if task[0]))
        chosen = [random.choice(captions)] if captions else []
        return chosen + random.sample(prompted, min(self.tasks_per_image - len(chosen), len(prompted)))

    def _packed_tasks(self, drawn: list[list[tuple[str, str]]]) -> dict:
        """Prompts and targets of each image's tasks as images x tasks x tokens (unused slots are padding)."""
        slots = [(image, slot) for image, tasks in enumerate(drawn) for slot in range(len(tasks))]
        flat = self._tokenize([task for tasks in drawn for task in tasks])
        images, width = len(drawn), max(len(tasks) for tasks in drawn)
        image_index, slot_index = torch.tensor(slots).T
        batch, pad = {}, self.processor.tokenizer.pad_token_id
        for key, fill in (("labels", -100), ("input_ids", pad), ("attention_mask", 0)):
            if key in flat:
                batch[key] = torch.full((images, width, flat[key].shape[1]), fill, dtype=flat[key].dtype)
                batch[key][image_index, slot_index] = flat[key]
        return batch
