"""Tiny models, processors and images built in the tests: nothing is downloaded."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    GPT2Config,
    GPT2LMHeadModel,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)

from modeling_vitgpt2.data.collator import CaptionCollator
from modeling_vitgpt2.training.scratch import build_scratch_model, build_scratch_processor, train_caption_tokenizer

CAPTIONS = [
    "a red circle on the left",
    "two small blue squares",
    "a green triangle above a yellow star",
    "three purple hearts in a row",
    "an orange square below a white circle",
    "one big black triangle",
    "a pink star right of a gray circle",
    "four tiny cyan dots",
]
IMAGE_SIZE = 32
# The from-scratch jobs' captioner: a ConvNeXt whose last feature map's cells are the prefix tokens.
CONVNEXT_PATCHES = {"vision_tower": "convnext", "vision_feature": "patch", "vision_feature_layer": -1}
# ... with its image tokens isolated inside GPT-2, as the questions job builds it.
ISOLATED = {**CONVNEXT_PATCHES, "isolate_image_tokens": True}


def distinct_images(count: int, size: int = IMAGE_SIZE, seed: int = 0) -> list[Image.Image]:
    """`count` clearly different RGB images: a coloured block pattern per index on noise."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        colour = np.array([(index * 97) % 256, (index * 53 + 80) % 256, (index * 191 + 40) % 256], dtype=np.uint8)
        row, col = divmod(index, 4)
        half = size // 2
        pixels[row * half : (row + 1) * half, col * (size // 4) : (col + 1) * (size // 4)] = colour
        images.append(Image.fromarray(pixels))
    return images


@pytest.fixture(scope="session")
def tokenizer():
    return train_caption_tokenizer(CAPTIONS * 4, vocab_size=300)


@pytest.fixture(scope="session")
def processor(tokenizer):
    return build_scratch_processor(tokenizer, IMAGE_SIZE)


def tiny_model(tokenizer, seed: int = 0, **config_kwargs):
    torch.manual_seed(seed)
    sizes = dict(image_size=IMAGE_SIZE, patch_size=8, vision_width=32, vision_layers=2, text_width=32, text_layers=2)
    return build_scratch_model(tokenizer, **{**sizes, **config_kwargs}).eval()


def without_dropout(model):
    """Dropout off everywhere, so that two ways of computing the same step must agree exactly."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@pytest.fixture(scope="session")
def model(tokenizer):
    return tiny_model(tokenizer)


@pytest.fixture(scope="session")
def saved_dir(tmp_path_factory, model, processor):
    """A folder written only by model.save_pretrained + processor.save_pretrained, as users do."""
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def evaluation_trainer(model, processor, output_dir) -> Seq2SeqTrainer:
    """A Seq2SeqTrainer that predicts as train.py evaluates: generating, 4 rows a batch, 8 new tokens at most."""
    collator = CaptionCollator(processor, 32)
    collator.training = False
    args = Seq2SeqTrainingArguments(
        output_dir=str(output_dir), predict_with_generate=True, remove_unused_columns=False, report_to="none",
        per_device_eval_batch_size=4, generation_max_length=8,
    )  # fmt: skip
    return Seq2SeqTrainer(model=model, args=args, data_collator=collator, processing_class=processor)


def train_on_pairs(
    model, processor, images, captions, steps: int, shuffle_pairs: bool = False, seed: int = 0, prompts=None
):
    """Plain AdamW on (image, caption) pairs, or (image, prompt) -> answer with `prompts`; `shuffle_pairs` re-pairs
    captions with random images every step."""
    generator = torch.Generator().manual_seed(seed)
    pixel_values = processor(images=images)["pixel_values"]
    text = processor.tokenize_targets(captions)
    if prompts is not None:
        text.update(processor.tokenize_prompts(prompts))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        order = torch.randperm(len(images), generator=generator) if shuffle_pairs else torch.arange(len(images))
        loss = model(pixel_values=pixel_values[order], **text).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def caption(model, processor, images, **generate_kwargs):
    pixel_values = processor(images=images)["pixel_values"]
    return processor.batch_decode(model.generate(pixel_values=pixel_values, max_new_tokens=40, **generate_kwargs))


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory, tokenizer, processor):
    """A tiny model that has learned the 8 CAPTIONS for distinct_images(8), saved as users save it."""
    model = train_on_pairs(tiny_model(tokenizer, seed=5), processor, distinct_images(8), CAPTIONS, steps=300)
    folder = tmp_path_factory.mktemp("trained")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32)


def save_clip(folder):
    config = CLIPConfig(
        vision_config={**VISION, "patch_size": 8},
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4),
        projection_dim=24,
    )
    model = CLIPModel(config)
    model.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return {"vision_model": model.vision_model, "visual_projection": model.visual_projection}


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory, tokenizer):
    """A tiny GPT-2 checkpoint with its tokenizer, saved as `gpt2` is on the Hub."""
    folder = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    """A tiny CLIP checkpoint with its image processor, saved as `openai/clip-vit-base-patch32` is on the Hub."""
    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    save_clip(folder)
    return folder


REPO = Path(__file__).resolve().parents[1]
# A small, quick model and data; every run is CPU-only and offline.
TINY = [
    "--scratch_width",
    "128",
    "--scratch_layers",
    "2",
    "--warmup_steps",
    "20",
    "--scratch_image_size",
    "64",
    "--scratch_patch_size",
    "16",
    "--builtin_train_size",
    "600",
    "--builtin_eval_size",
    "48",
    "--per_device_eval_batch_size",
    "48",
    "--logging_steps",
    "5",
    "--max_train_minutes",
    "5",
    "--sample_captions",
    "2",
]


def run_train(*args, output_dir, timeout=600, check=True, env=None):
    command = [sys.executable, str(REPO / "train.py"), "--output_dir", str(output_dir), *map(str, args)]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


# The start of a script that plays a Hub user: it loads a saved folder (argv[1]) and reads images (argv[2:]) with
# this repo's package blocked; tests append what they check and print it as JSON.
ISOLATED_USER_PRELUDE = textwrap.dedent(
    """
    import json, sys
    sys.modules["modeling_vitgpt2"] = None  # this repo's package must not be importable, even if pip-installed
    from transformers import AutoModel, AutoProcessor, pipeline
    from PIL import Image

    folder, paths = sys.argv[1], sys.argv[2:]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    images = [Image.open(path) for path in paths]
    """
)


def run_isolated(args, cwd, python=sys.executable):
    """python -I: no PYTHONPATH, no current directory on sys.path, no user site — a process that cannot import
    this repo (the tests' scripts also block the package by name, in case it is pip-installed)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [python, "-I", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def results_of(output_dir) -> dict:
    return json.loads((Path(output_dir) / "all_results.json").read_text())


@pytest.fixture(scope="session")
def short_run(tmp_path_factory):
    """train.py from scratch on the built-in data for about a minute: (output folder, completed process)."""
    out = tmp_path_factory.mktemp("short_run")
    # The job's width (192) and learning rate: in 250 steps the ConvNeXt learns colours at those, not at TINY's 128
    # with 2e-3 (loss 0.52 vs 0.86).
    result = run_train(
        *TINY, "--builtin_train_size", "3000", "--max_steps", "250", "--scratch_width", "192", output_dir=out
    )
    return out, result


@pytest.fixture(scope="session")
def vqa_run(tmp_path_factory):
    """train.py on the built-in questions for 30 steps, evaluated mid-training too (which reads whole, unpacked
    tasks), with a checkpoint at step 20: (output folder, completed process)."""
    out = tmp_path_factory.mktemp("vqa_run")
    result = run_train(
        *TINY, "--dataset", "builtin:shapes-vqa", "--builtin_train_size", "300", "--max_steps", "30",
        "--eval_strategy", "steps", "--eval_steps", "20", "--save_steps", "20", output_dir=out,
    )  # fmt: skip
    return out, result
