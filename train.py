"""Train a vitgpt2 captioner (or question answerer) with Seq2SeqTrainer.

    python train.py                      # the embedded default: a small model from scratch on the built-in
                                         # shapes dataset, offline, ~10 minutes on 2 CPU cores
    python train.py --dataset builtin:shapes-vqa --output_dir runs/shapes-vqa
                                         # the same scenes, captions and visual questions in one model
    python train.py --dataset builtin:text-lines
                                         # the reading job: a text-line reader from scratch, real prose in real
                                         # fonts, into runs/text-lines
    python train.py --vision_model openai/clip-vit-base-patch32 --text_model gpt2 \\
        --dataset yerevann/coco-karpathy --caption_column sentences --output_dir runs/coco
    accelerate launch train.py ...       # several GPUs (or torchrun --nproc_per_node N train.py ...)

`python train.py --help` lists every option (model, data, and all of Seq2SeqTrainingArguments).
"""

import argparse
import ctypes
import json
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field

import datasets
import evaluate
import numpy as np
import torch
import transformers
from transformers import HfArgumentParser, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, has_length

from modeling_vitgpt2 import VitGpt2ForCaptioning, VitGpt2Processor
from modeling_vitgpt2.data.collator import CaptionCollator
from modeling_vitgpt2.data.feature_cache import DEFAULT_CACHE_DIR, VisionFeatureCache
from modeling_vitgpt2.data.loading import (
    BUILTIN,
    BUILTIN_TEXT_LINES,
    BUILTIN_VQA,
    CELLS_COLUMN,
    DatasetError,
    as_caption_list,
    drop_bad_examples,
    load_caption_dataset,
    materialise,
    prompts_of,
    references_of,
    with_caption_lengths,
)
from modeling_vitgpt2.data.prepared_lines import with_prepared_lines
from modeling_vitgpt2.data.reading.corpus import CHARSET
from modeling_vitgpt2.hub.export import CURVES, EXAMPLES, RUN_INFO, export, push
from modeling_vitgpt2.metrics import coco_caption
from modeling_vitgpt2.metrics.answer_accuracy import answer_accuracy
from modeling_vitgpt2.metrics.reading import READING_METRICS, reading_metrics
from modeling_vitgpt2.training import cell_supervision
from modeling_vitgpt2.training.report import (
    METRIC_COLUMNS,
    caption_grid,
    line_sheet,
    plot_training_curves,
    print_metrics_table,
    print_sample_captions,
    sample_indices,
    write_examples,
)
from modeling_vitgpt2.training.scratch import (
    build_character_tokenizer,
    build_reader_processor,
    build_scratch_model,
    build_scratch_processor,
    build_scratch_reader,
    train_caption_tokenizer,
)

logger = logging.getLogger("train")
METRIC = coco_caption.__file__  # an `evaluate` metric script, loaded by path


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue from a saved vitgpt2 model (folder or Hub id)."}
    )
    vision_model: str | None = field(
        default=None,
        metadata={
            "help": "Pretrained vision checkpoint: CLIP (e.g. openai/clip-vit-base-patch32), ViT or SigLIP. "
            "Without --vision_model/--text_model a small model is built from scratch."
        },
    )
    text_model: str | None = field(default=None, metadata={"help": "Pretrained GPT-2 checkpoint (e.g. gpt2)."})
    vision_feature: str | None = field(
        default=None,
        metadata={
            "help": "'pooled' (one image embedding -> prefix_length tokens, ClipCap; the default with a "
            "pretrained vision model) or 'patch' (one prefix token per patch, LLaVA; the from-scratch default)."
        },
    )
    vision_feature_layer: int = field(default=-1, metadata={"help": "Hidden layer whose patches 'patch' uses."})
    prefix_length: int = field(default=1, metadata={"help": "Prefix tokens the pooled embedding is split into."})
    isolate_image_tokens: bool = field(
        default=False,
        metadata={
            "help": "Inside GPT-2 each image token attends to itself only, and a learned token after them reads them "
            "all (config isolate_image_tokens; on for builtin:shapes-vqa: its answers find the object asked about "
            "more often, README, Questions). A new model only."
        },
    )
    freeze_vision: bool | None = field(
        default=None,
        metadata={
            "help": "Freeze the vision tower (default: yes with --vision_model; no when built from scratch or "
            "continued with --model_name_or_path)."
        },
    )
    freeze_text: bool = field(default=False, metadata={"help": "Freeze GPT-2 (train the projection only)."})
    projection_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the projection MLP (default: --learning_rate)."}
    )
    scratch_image_size: int = field(default=64, metadata={"help": "From scratch: image side in pixels."})
    scratch_patch_size: int = field(
        default=16,
        metadata={"help": "From scratch: pixels per prefix token's side (a ViT patch, or a ConvNeXt's last cell)."},
    )
    scratch_width: int = field(
        default=192,
        metadata={"help": "From scratch: GPT-2's width, and a captioner's vision tower's (its last stage's)."},
    )
    scratch_layers: int = field(
        default=2,
        metadata={"help": "From scratch: GPT-2's depth, and a captioner's vision tower's (its last stage's)."},
    )
    scratch_text_layers: int | None = field(
        default=None,
        metadata={"help": "From scratch: GPT-2's depth alone, when it should differ from --scratch_layers."},
    )
    scratch_vocab_size: int = field(default=400, metadata={"help": "From scratch: BPE vocabulary size."})
    scratch_vision_tower: str = field(
        default="convnext",
        metadata={
            "help": "From scratch, a captioner's vision tower: 'convnext' (convolutions: learns shapes apart from "
            "colours, see README) or 'clip' (a ViT, as in the pretrained recipe).",
            "choices": ["convnext", "clip"],
        },
    )
    reader: bool | None = field(
        default=None,
        metadata={
            "help": "From scratch: build a text-line reader (one token per character; a ConvNeXt reads the line "
            f"in 4-px columns; a CTC head on them guides decoding) instead of a captioner. Default: yes for "
            f"{BUILTIN_TEXT_LINES}, else no."
        },
    )
    reader_vision_width: int = field(
        default=96, metadata={"help": "From scratch, a reader: its ConvNeXt's width (each 4-px column's feature)."}
    )
    reader_vision_blocks: int = field(default=3, metadata={"help": "From scratch, a reader: its ConvNeXt's blocks."})
    reader_stem_rows: int = field(
        default=8, metadata={"help": "From scratch, a reader: pixel rows of its ConvNeXt's stem (of a 32-px line)."}
    )


@dataclass
class DataArguments:
    dataset: str = field(
        default=BUILTIN,
        metadata={
            "help": f"'{BUILTIN}' (generated scenes), '{BUILTIN_VQA}' (the same scenes with visual questions), "
            f"'{BUILTIN_TEXT_LINES}' (real prose drawn in real fonts, to train a reader), a Hub "
            "dataset id, an imagefolder folder (images + metadata.jsonl/.csv), a saved DatasetDict, or a .jsonl/.csv "
            "of image paths and captions."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: guessed)."})
    caption_column: str | None = field(
        default=None,
        metadata={
            "help": "Target column: the caption (or the answer, with a prompt column), a string or a list of strings "
            "per example (default: guessed)."
        },
    )
    prompt_column: str | None = field(
        default=None,
        metadata={
            "help": "Prompt column (e.g. the question); the model learns to write the target after it, and the loss "
            "covers the target only. Default: 'prompt' if the data has one, else none (captioning)."
        },
    )
    prompt: str | None = field(
        default=None,
        metadata={"help": "One fixed prompt for every example (e.g. 'a photo of'); give the same one when generating."},
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default="validation", metadata={"help": "Split evaluated during training."})
    test_splits: str = field(
        default="test,test_unseen",
        metadata={"help": "Comma-separated splits evaluated after training (missing ones are skipped)."},
    )
    max_caption_length: int = field(default=32, metadata={"help": "Caption tokens kept in training (EOS included)."})
    caption_token_dropout: float = field(
        default=0.0,
        metadata={
            "help": "Share of caption input tokens replaced by random ones in training (labels unchanged), so that "
            "words are predicted from the image more than from the words before them (default 0.2, tuned for the "
            "built-in data; 0-0.1 suits natural captions)."
        },
    )
    cell_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the per-cell loss: a linear head asks each image token what its grid cell holds, from "
            "the training data's `cells` column (the built-in scenes have one; training/cell_supervision.py). The "
            "head trains with the model and is not saved with it. Default 2 for builtin:shapes-vqa, else 0."
        },
    )
    tasks_per_image: int = field(
        default=1,
        metadata={
            "help": "Train up to N of an example's tasks per step from one reading of its image: its caption and N-1 "
            "of its questions, packed in one sequence where each task sees only the image and its own prompt, as "
            "if trained alone (1: one task drawn per example and epoch)."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N examples only."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N examples only."})
    streaming: bool = field(
        default=False, metadata={"help": "Stream the training split (IterableDataset; needs --max_steps)."}
    )
    strict: bool = field(default=False, metadata={"help": "Fail on a bad example instead of skipping and counting."})
    feature_cache: bool = field(
        default=True, metadata={"help": "Cache frozen vision features across epochs and runs (frozen vision only)."}
    )
    feature_cache_dir: str = field(default=str(DEFAULT_CACHE_DIR), metadata={"help": "Where cached features live."})
    builtin_train_size: int = field(default=20000, metadata={"help": f"{BUILTIN}: training scenes."})
    builtin_eval_size: int = field(default=500, metadata={"help": f"{BUILTIN}: scenes per evaluation split."})
    builtin_caption_share: float = field(
        default=0.5,
        metadata={
            "help": f"{BUILTIN_VQA} with --tasks_per_image 1: share of training draws that are the caption (the rest "
            "are questions). Packed training (its default, 4) takes each scene's caption every epoch."
        },
    )


@dataclass
class RunArguments:
    max_train_minutes: float | None = field(
        default=None,
        metadata={
            "help": "Opt-in: stop training after this much wall time; the learning rate then follows a cosine over "
            "whichever ends first, the planned steps or this budget. By default training follows its plan of steps, "
            "so that a seeded run ends with the same model on any machine, however busy."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start afresh even if output_dir holds checkpoints (by default the run resumes from the "
            "newest complete one)."
        },
    )
    sample_captions: int = field(default=8, metadata={"help": "Test images printed (and drawn) with captions."})


# Train in bf16 autocast on a CPU that has AMX units (tile matrix multiply in bf16): there a step is 1.6-1.7x float32's.
# Elsewhere CPUs emulate bf16 slowly, so they train in float32 (and a seeded job gives a slightly different model).
CPU_BF16 = not torch.cuda.is_available() and torch.cpu._is_amx_tile_supported()
# What `python train.py` with no arguments does: the embedded default main job. These are also the defaults of
# every run (set them explicitly for other data, as the README's recipe does).
EMBEDDED_DEFAULTS = dict(
    output_dir="runs/default",
    caption_token_dropout=0.2,
    per_device_train_batch_size=64,
    per_device_eval_batch_size=128,
    learning_rate=1e-3,
    weight_decay=0.01,
    warmup_steps=100,
    lr_scheduler_type="cosine",
    num_train_epochs=7,
    logging_steps=50,
    eval_strategy="no",
    save_strategy="steps",
    save_steps=500,
    save_total_limit=2,
    predict_with_generate=True,
    generation_max_length=32,
    remove_unused_columns=False,
    report_to="none",
    # On a GPU, decoding images / reading cached features in worker processes keeps it busy; on CPU they would take
    # cores from the model.
    dataloader_num_workers=4 if torch.cuda.is_available() else 0,
    dataloader_pin_memory=torch.cuda.is_available(),
    # The fused AdamW kernel (5x faster than the for-each one for GPT-2 small on 2 CPU cores); bf16 autocast on a GPU,
    # and on a CPU with AMX units (Intel Xeon since Sapphire Rapids: 1.6-1.7x the float32 step, README, Speed); on a
    # GPU also torch.compile (losses match the plain path within bf16 tolerance, tests/test_speed.py; speed-ups in
    # benchmarks/RESULTS.md). On CPU compiling costs more minutes than it saves in a short run.
    bf16=(torch.cuda.is_available() and torch.cuda.is_bf16_supported()) or CPU_BF16,
    use_cpu=CPU_BF16,  # transformers takes bf16 on a CPU only when told the run is on one
    optim="adamw_torch_fused",
    torch_compile=torch.cuda.is_available(),
    seed=42,
)
# What `python train.py --dataset builtin:shapes-vqa` changes in those defaults: the questions job trains each scene's
# caption and questions together, packed after one reading of the image, at half the caption job's learning rate
# (over three initialisations: answers 95.5-97.4% against 93.8-96.2% at 1e-3, captions the same), with its image
# tokens isolated inside GPT-2 (answers 96.1-96.8% against 94.1-97.4%, colour 92.3-94.9 against 85.5-96.5; README,
# Questions), and each image token also trained to say what its cell holds (over three initialisations: answers
# 96.7-97.9% against 96.1-96.8%, captions 81.4-82.6% against 79.2-81.8%, colour 93.2-97.4 against 92.3-94.9); that
# loss at weight 2 over 6 epochs (not 1 over 5) puts colour past 95 in all three (97.1-98.9 against 93.4-96.3),
# where weight 2 alone cost one initialisation its shape answers (docs/questions-experiments.md).
QUESTION_DEFAULTS = dict(
    tasks_per_image=4, num_train_epochs=6, learning_rate=5e-4, isolate_image_tokens=True, cell_loss_weight=2.0
)
# What `python train.py --dataset builtin:text-lines` changes in those defaults: the reading job.
READING_DEFAULTS = dict(
    output_dir="runs/text-lines",
    test_splits="test,test_unseen_fonts",
    builtin_train_size=20000,  # fewer lines read worse (README, Reading text)
    builtin_eval_size=400,
    caption_token_dropout=0.0,
    max_caption_length=161,  # characters, EOS included: long lines are read whole
    generation_max_length=160,
    scratch_width=192,
    scratch_layers=2,
    per_device_train_batch_size=32,
    learning_rate=2e-3,
    num_train_epochs=2,
    # Lines of one width in a batch (a reader's `length` is its prepared line's width in px, data/prepared_lines.py):
    # the width of a batch is what the ConvNeXt pays for.
    train_sampling_strategy="group_by_length",
    # Every batch has its own width: a compiled model would recompile shape after shape.
    torch_compile=False,
    save_steps=250,
)


class WallClock:
    """Share of a wall-time budget spent since training (re)started."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.start = time.monotonic()

    def spent(self) -> float:
        return (time.monotonic() - self.start) / self.seconds


class WallClockLimit(TrainerCallback):
    """Ends training when the budget is spent; the model is then saved and evaluated as after a full run."""

    def __init__(self, clock: WallClock):
        self.clock = clock

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.clock.spent() >= 1:
            logger.warning(f"wall-time budget of {self.clock.seconds / 60:.1f} min spent at step {state.global_step}")
            control.should_training_stop = True
            control.should_save = True


class BudgetProgress(ProgressCallback):
    """The training bar under a wall-time budget: it counts to the step the budget will end at, projected from the pace
    so far, where that comes before the plan's last step; its ETA is then the budget's, not the plan's."""

    def __init__(self, clock: WallClock):
        super().__init__()
        self.clock = clock
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.first_step = state.global_step  # a resumed run's budget starts again at its checkpoint's step

    def on_step_end(self, args, state, control, **kwargs):
        spent = self.clock.spent()
        if self.training_bar is not None and spent > 0:
            projected = self.first_step + round((state.global_step - self.first_step) / spent)
            self.training_bar.total = min(state.max_steps, max(state.global_step, projected))
        super().on_step_end(args, state, control, **kwargs)


class TrainingDiverged(RuntimeError):
    """The gradients stopped being finite: one more update would write NaN into every weight."""


class StopOnDivergence(TrainerCallback):
    """Stops a run at the first step whose (clipped) gradients are not finite, before the optimizer applies them: a
    diverged run never recovers, and would spend its remaining budget saving NaN weights over the output folder
    (the reading job's first GPU run did: 10,000 steps of NaN). fp16's loss scaler skips such steps itself."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
        if not args.fp16 and grads and not torch.stack(torch._foreach_norm(grads)).isfinite().all():
            raise TrainingDiverged(
                f"training diverged at step {state.global_step + 1}: the gradients are not finite (NaN or inf); "
                f"stopped before that update, so no weights from it were saved into {args.output_dir}. Try a "
                "lower --learning_rate or --max_grad_norm, or fp32 (--bf16 False)"
            )


class BudgetedTrainer(Seq2SeqTrainer):
    """With a wall-time budget, the learning rate warms up and then follows a cosine over whichever ends first, the
    planned steps or the budget: on a slow machine the run still anneals fully instead of stopping at a high rate."""

    def __init__(self, *args, clock: WallClock | None = None, cell_loss_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.cell_loss_weight = cell_loss_weight

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.clock is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        warmup = self.args.get_warmup_steps(num_training_steps)

        def factor(step: int) -> float:
            if step < warmup:
                return step / warmup
            progress = max((step - warmup) / max(1, num_training_steps - warmup), self.clock.spent())
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        cell_labels = inputs.pop("cell_labels", None)  # training batches, with --cell_loss_weight
        if cell_labels is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        loss = loss + self.cell_loss_weight * cell_supervision.cell_loss(model, outputs, cell_labels)
        return (loss, outputs) if return_outputs else loss

    def evaluation_loop(self, *args, **kwargs):
        # Evaluation reads each example's first task, whole (the metrics score against all its references), never
        # the training draws: no random task, no token dropout, no packing.
        training, self.data_collator.training = self.data_collator.training, False
        try:
            return super().evaluation_loop(*args, **kwargs)
        finally:
            self.data_collator.training = training

    def _get_eval_sampler(self, eval_dataset):
        # transformers 5 length-groups evaluation too when training does; predictions must stay in dataset order to
        # line up with the references, the captions grid and the examples.
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None


def keep_large_blocks_in_the_heap() -> None:
    """glibc's malloc hands out blocks over 32 MB (a reader's activations) as fresh memory maps and returns them on
    free, so every training step faults their pages in again (11,000-14,000 page faults a step of the reading job).
    Kept in the heap, the same step takes ~10% less time on 2 cores (README, Speed); the arithmetic is the same. A
    no-op where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    mallopt(m_mmap_threshold, 1 << 30)  # blocks up to 1 GB from the heap...
    mallopt(m_trim_threshold, (1 << 31) - 1)  # ...and freed memory kept for the next step


def parse_arguments():
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, RunArguments, Seq2SeqTrainingArguments), description=__doc__
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.set_defaults(**EMBEDDED_DEFAULTS)
    chosen, _ = parser.parse_known_args()
    if chosen.dataset == BUILTIN_VQA:
        parser.set_defaults(**QUESTION_DEFAULTS)
    if chosen.dataset == BUILTIN_TEXT_LINES:
        parser.set_defaults(**READING_DEFAULTS)
    return parser.parse_args_into_dataclasses()


def check_hub_access(args) -> None:
    """--push_to_hub fails now, not after hours of training."""
    if not args.push_to_hub:
        return
    from huggingface_hub import HfApi

    try:
        HfApi().whoami()
    except Exception as error:  # offline, no token, or a bad token: all mean the push would fail later
        sys.exit(
            f"--push_to_hub: cannot reach the Hugging Face Hub as a logged-in user ({type(error).__name__}: "
            f"{error}). Run `huggingface-cli login` and check the network, or drop --push_to_hub."
        )


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint whose save finished (trainer_state.json is written last); a run killed while saving
    leaves an incomplete folder that is skipped, never resumed from."""
    if not os.path.isdir(output_dir):
        return None
    steps = []
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(PREFIX_CHECKPOINT_DIR + "-") and os.path.isfile(os.path.join(path, "trainer_state.json")):
            steps.append((int(name.rsplit("-", 1)[1]), path))
    return max(steps)[1] if steps else None


def build_model(model_args, train_dataset):
    if model_args.model_name_or_path:
        model = VitGpt2ForCaptioning.from_pretrained(model_args.model_name_or_path)
        processor = VitGpt2Processor.from_pretrained(model_args.model_name_or_path)
        return model, processor, False
    if model_args.vision_model or model_args.text_model:
        if not (model_args.vision_model and model_args.text_model):
            sys.exit("--vision_model and --text_model go together")
        model = VitGpt2ForCaptioning.from_vision_text_pretrained(
            model_args.vision_model,
            model_args.text_model,
            vision_feature=model_args.vision_feature or "pooled",
            vision_feature_layer=model_args.vision_feature_layer,
            prefix_length=model_args.prefix_length,
            isolate_image_tokens=model_args.isolate_image_tokens,
        )
        processor = VitGpt2Processor.from_vision_text_pretrained(model_args.vision_model, model_args.text_model)
        return model, processor, True
    text_columns = [column for column in ("captions", "prompt") if column in (train_dataset.column_names or [])]
    rows = train_dataset.select_columns(text_columns or ["captions"])
    if isinstance(rows, datasets.IterableDataset):
        rows = rows.take(50000)  # a stream: learn the vocabulary from its beginning
    texts = (text for row in rows for text in as_caption_list(row["captions"]) + as_caption_list(row.get("prompt")))
    text_layers = model_args.scratch_text_layers or model_args.scratch_layers
    if model_args.reader:
        tokenizer = build_character_tokenizer(CHARSET + "".join(sorted(set("".join(texts)) - set(CHARSET))))
        model = build_scratch_reader(
            tokenizer, vision_width=model_args.reader_vision_width, blocks=model_args.reader_vision_blocks,
            stem_rows=model_args.reader_stem_rows,
            text_width=model_args.scratch_width, text_layers=text_layers,
            heads=max(1, model_args.scratch_width // 64),
        )  # fmt: skip
        return model, build_reader_processor(tokenizer, model.config), False
    tokenizer = train_caption_tokenizer(texts, vocab_size=model_args.scratch_vocab_size)
    model = build_scratch_model(
        tokenizer,
        image_size=model_args.scratch_image_size,
        patch_size=model_args.scratch_patch_size,
        vision_width=model_args.scratch_width,
        vision_layers=model_args.scratch_layers,
        text_width=model_args.scratch_width,
        text_layers=text_layers,
        heads=max(1, model_args.scratch_width // 64),
        vision_feature=model_args.vision_feature or "patch",
        vision_feature_layer=model_args.vision_feature_layer,
        prefix_length=model_args.prefix_length,
        isolate_image_tokens=model_args.isolate_image_tokens,
        vision_tower=model_args.scratch_vision_tower,
    )
    return model, build_scratch_processor(tokenizer, model_args.scratch_image_size), False


def cell_classes(train_dataset) -> tuple[int, ...]:
    """How many classes each attribute of the training data's `cells` has (its largest index + 1; 0 is "empty")."""
    if not isinstance(train_dataset, datasets.Dataset):
        sys.exit("error: --cell_loss_weight needs a map-style training set (not --streaming): it counts the classes")
    if CELLS_COLUMN not in (train_dataset.column_names or []):
        sys.exit(f"error: --cell_loss_weight needs training data with a `{CELLS_COLUMN}` column ({BUILTIN_VQA}'s)")
    cells = np.asarray(train_dataset.with_format("numpy")[CELLS_COLUMN])
    return tuple(int(count) + 1 for count in cells.reshape(-1, cells.shape[-1]).max(axis=0))


def write_run_info(output_dir: str, model_args, data_args) -> None:
    """What the model card needs to say how the model was made."""
    info = {
        "command": shlex.join(["python", os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "dataset": data_args.dataset,
        "vision_model": model_args.vision_model,
        "text_model": model_args.text_model,
        "date": time.strftime("%Y-%m-%d"),
    }
    with open(os.path.join(output_dir, RUN_INFO), "w") as file:
        json.dump(info, file, indent=2)


def projection_optimizer(model, training_args, model_args):
    """A separate learning rate for the projection MLP, as ClipCap-style training often wants."""
    if model_args.projection_learning_rate is None:
        return None
    projection = [p for p in model.projector.parameters() if p.requires_grad]
    rest = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("projector.")]
    groups = [{"params": rest}, {"params": projection, "lr": model_args.projection_learning_rate}]
    return torch.optim.AdamW(
        groups, lr=training_args.learning_rate, weight_decay=training_args.weight_decay, fused=True
    )


def main():
    model_args, data_args, run_args, training_args = parse_arguments()
    if model_args.reader is None:
        model_args.reader = data_args.dataset == BUILTIN_TEXT_LINES
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    check_hub_access(training_args)
    # We upload the exported folder ourselves at the end; the Trainer must not push its output_dir on each save.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    transformers.set_seed(training_args.seed)
    if training_args.bf16 and training_args.use_cpu:
        # Tiny values as zero: bf16 training on a CPU otherwise slows down as more of them appear (denormal numbers
        # take the slow path): the reading job's steps went from 2.2/s to 1.5/s over its run, 2.1/s with this.
        torch.set_flush_denormal(True)
    if training_args.use_cpu or not torch.cuda.is_available():
        keep_large_blocks_in_the_heap()

    # --- data -------------------------------------------------------------------------------------------------
    try:
        with training_args.main_process_first(desc="loading and checking the dataset"):
            dataset = load_caption_dataset(data_args, seed=training_args.seed)
            train_dataset = dataset[data_args.train_split]
            if data_args.max_train_samples:
                train_dataset = (
                    train_dataset.take(data_args.max_train_samples)
                    if data_args.streaming
                    else train_dataset.select(range(min(data_args.max_train_samples, len(train_dataset))))
                )
            train_dataset, train_skips, skipped = drop_bad_examples(
                train_dataset, "train", data_args.strict, allow_blank=model_args.reader
            )
            if (
                training_args.train_sampling_strategy in ("group_by_length", "batch_rebalance")
                and not data_args.streaming
            ):
                train_dataset = with_caption_lengths(train_dataset)
                training_args.length_column_name = "length"
            eval_splits = [s for s in [data_args.eval_split, *data_args.test_splits.split(",")] if s and s in dataset]
            evaluation = {}
            for split in dict.fromkeys(eval_splits):
                checked, _, _ = drop_bad_examples(
                    materialise(dataset[split], data_args.max_eval_samples), split, data_args.strict
                )
                evaluation[split] = checked
    except DatasetError as error:
        sys.exit(f"error: {error}")
    if data_args.streaming and training_args.max_steps <= 0:
        sys.exit("error: --streaming needs --max_steps (a stream has no length to count epochs by)")

    # --- model ------------------------------------------------------------------------------------------------
    model, processor, pretrained_vision = build_model(model_args, train_dataset)
    if data_args.cell_loss_weight:
        cell_supervision.attach(model, cell_classes(train_dataset))
    freeze_vision = pretrained_vision if model_args.freeze_vision is None else model_args.freeze_vision
    model.freeze(vision_tower=freeze_vision, language_model=model_args.freeze_text)
    model.generation_config.max_new_tokens = training_args.generation_max_length or data_args.max_caption_length
    cache = None
    if freeze_vision and data_args.feature_cache:
        cache = VisionFeatureCache(model, processor, data_args.feature_cache_dir)
        logger.info(f"vision features cached in {cache.directory}")
        # Filled up front, in batches, images decoded in workers: training's data-loader workers then only read.
        splits = {"train": train_dataset, **evaluation} if not data_args.streaming else evaluation
        batch_size, workers = training_args.per_device_eval_batch_size, training_args.dataloader_num_workers
        for split, data in splits.items():
            cache.fill(data, batch_size, workers, description=f"vision features: {split}")
        if data_args.streaming and training_args.dataloader_num_workers:
            logger.warning("a streamed dataset's features are cached as it streams: data-loader workers turned off")
            training_args.dataloader_num_workers = 0
    elif processor.reads_lines and not data_args.streaming:
        # Prepared once on every core, not per epoch in the training loop; `length` becomes each line's width in px.
        train_dataset = with_prepared_lines(train_dataset, processor.image_processor, "train")
        evaluation = {
            split: with_prepared_lines(data, processor.image_processor, split) for split, data in evaluation.items()
        }
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"{trainable / 1e6:.2f}M trainable; vision {'frozen' if freeze_vision else 'trained'}"
    )

    # --- training ---------------------------------------------------------------------------------------------
    collator = CaptionCollator(
        processor,
        data_args.max_caption_length,
        feature_cache=cache,
        token_dropout=data_args.caption_token_dropout,
        # A compiled model recompiles for each new caption length; multiples of 8 leave a handful of shapes.
        pad_to_multiple_of=8 if training_args.torch_compile else None,
        tasks_per_image=data_args.tasks_per_image,
        cell_labels=bool(data_args.cell_loss_weight),
    )
    metric = evaluate.load(METRIC)

    def metrics_for(split):
        """Caption metrics over the examples without a prompt, answer accuracy over those with one."""
        data = evaluation[split]
        references, prompts = references_of(data), prompts_of(data)
        types = list(data["question_type"]) if "question_type" in data.column_names else None

        def compute_metrics(prediction):
            texts = processor.batch_decode(prediction.predictions)
            if model_args.reader:
                return reading_metrics(texts, [lines[0] for lines in references[: len(texts)]])
            captioned = [index for index, prompt in enumerate(prompts[: len(texts)]) if not prompt]
            asked = [index for index, prompt in enumerate(prompts[: len(texts)]) if prompt]
            scores = {}
            if captioned:
                coco = metric.compute(
                    predictions=[texts[i] for i in captioned], references=[references[i] for i in captioned]
                )
                scores.update({name: coco[name] for name in METRIC_COLUMNS})
            if asked:
                scores.update(
                    answer_accuracy(
                        [texts[i] for i in asked],
                        [references[i] for i in asked],
                        None if types is None else [types[i] for i in asked],
                    )
                )
            return scores

        return compute_metrics

    clock = WallClock(run_args.max_train_minutes) if run_args.max_train_minutes else None
    optimizer = projection_optimizer(model, training_args, model_args)
    eval_split = data_args.eval_split if data_args.eval_split in evaluation else None
    trainer = BudgetedTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=evaluation.get(eval_split),
        data_collator=collator,
        processing_class=processor,
        compute_metrics=metrics_for(eval_split) if eval_split else None,
        callbacks=[StopOnDivergence()] + ([WallClockLimit(clock)] if clock else []),
        optimizers=(optimizer, None),
        clock=clock,
        cell_loss_weight=data_args.cell_loss_weight,
    )

    if clock and trainer.pop_callback(ProgressCallback) is not None:  # None: the bar is off (--disable_tqdm)
        trainer.add_callback(BudgetProgress(clock))

    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and not run_args.overwrite_output_dir:
        checkpoint = last_complete_checkpoint(training_args.output_dir)
        if checkpoint:
            logger.warning(f"resuming from {checkpoint} (pass --overwrite_output_dir to start afresh)")
    elif checkpoint and not os.path.isfile(os.path.join(checkpoint, "trainer_state.json")):
        sys.exit(f"error: --resume_from_checkpoint {checkpoint}: not a complete checkpoint (no trainer_state.json)")
    # `--do_eval` alone evaluates a model without training it. TrainingArguments also sets do_eval for evaluation
    # during training (--eval_strategy steps/epoch), which trains: that is not an evaluation-only run.
    evaluate_only = training_args.do_eval and not training_args.do_train and training_args.eval_strategy == "no"
    if not evaluate_only:
        try:
            result = trainer.train(resume_from_checkpoint=checkpoint)
        except TrainingDiverged as error:
            sys.exit(f"error: {error}")
        cell_supervision.detach(model)  # a training aid: not part of the saved model
        trainer.save_model()  # model + processor + remote code into output_dir
        metrics = dict(result.metrics)
        metrics["train_skipped_examples"] = skipped if skipped is not None else sum(train_skips.reasons.values())
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        if trainer.is_world_process_zero():
            curves = os.path.join(training_args.output_dir, CURVES)
            if plot_training_curves(trainer.state.log_history, curves):
                logger.info(f"training loss, gradient norm and learning rate drawn in {curves}")
        if skipped is None and train_skips.reasons:
            logger.warning(train_skips.report("train"))

    # --- evaluation -------------------------------------------------------------------------------------------
    results = {}
    for split, split_dataset in evaluation.items():
        prefix = "eval" if split == eval_split else split
        trainer.compute_metrics = metrics_for(split)
        output = trainer.predict(split_dataset, metric_key_prefix=prefix)
        trainer.log_metrics(prefix, output.metrics)
        trainer.save_metrics(prefix, output.metrics)
        results[prefix] = (split_dataset, processor.batch_decode(output.predictions), output.metrics)

    if not trainer.is_world_process_zero():
        return
    write_run_info(training_args.output_dir, model_args, data_args)
    if results:
        print_metrics_table(
            {prefix: metrics for prefix, (_, _, metrics) in results.items()},
            READING_METRICS if model_args.reader else METRIC_COLUMNS,
        )
    examples_written = False
    for prefix, (split_dataset, captions, _) in results.items():
        if not prefix.startswith("test"):
            continue
        shown = sample_indices(split_dataset, min(run_args.sample_captions, len(captions)))
        print_sample_captions(prefix, split_dataset, captions, shown)
        path = os.path.join(training_args.output_dir, f"{prefix}_{'lines' if model_args.reader else 'captions'}.png")
        (line_sheet if model_args.reader else caption_grid)(split_dataset, captions, shown).save(path)
        logger.info(f"{prefix}: images with their captions drawn in {path}")
        if not examples_written:  # the model card's widget examples come from the first test split
            write_examples(os.path.join(training_args.output_dir, EXAMPLES), split_dataset, captions, count=4)
            examples_written = True
    if push_to_hub:
        repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
        folder = export(training_args.output_dir, os.path.join(training_args.output_dir, "hub"), repo_id=repo_id)
        logger.info(f"uploaded {folder}: {push(folder, repo_id, private=bool(training_args.hub_private_repo))}")


if __name__ == "__main__":
    main()
