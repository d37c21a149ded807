"""Side-by-side speed benchmark: vitgpt2 against transformers' VisionEncoderDecoderModel (ViT encoder + GPT-2 decoder
with cross-attention), at real sizes (CLIP ViT-B/32 vision config, GPT-2 small), randomly initialised, on the same
synthetic inputs: 224 px images, 24-token captions, 20 new tokens when captioning.

    python benchmarks/bench.py                 # CPU, real sizes (minutes)
    python benchmarks/bench.py --device cuda   # GPU, bf16 autocast (and torch.compile for train.py's GPU path)
    python benchmarks/bench.py --quick         # seconds: small configs, proves the script works

Each side runs as its users would run it: vitgpt2 with what train.py and generate() do by default (frozen vision
tower + feature cache, torch.compile on a GPU; greedy decoding on CUDA graphs), the peer with plain transformers.
The vitgpt2-only rows show what each fast path adds, and what grouping captions of varying (COCO-like) lengths
into batches saves. Prints a table (ours, peer, ratio) and then the same numbers as
JSON, from one run. A measurement that fails is reported as an error and the rest still run.
"""

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import torch
from transformers import (
    CLIPVisionConfig,
    GPT2Config,
    GPT2LMHeadModel,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTModel,
)
from transformers.activations import ACT2FN
from transformers.trainer_pt_utils import get_length_grouped_indices

from modeling_vitgpt2 import VitGpt2Config, VitGpt2ForCaptioning
from modeling_vitgpt2.modeling_vitgpt2 import _ConvNextDepthwiseConv2d

CAPTION_TOKENS = 24
NEW_TOKENS = 20


def sizes(quick: bool) -> dict:
    if quick:
        return dict(width=64, layers=2, heads=2, image=64, patch=32, projection=32, vocab=1000)
    return dict(width=768, layers=12, heads=12, image=224, patch=32, projection=512, vocab=50257)


def build_ours(s) -> VitGpt2ForCaptioning:
    vision = CLIPVisionConfig(
        hidden_size=s["width"], intermediate_size=4 * s["width"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], image_size=s["image"], patch_size=s["patch"], projection_dim=s["projection"],
    )  # fmt: skip
    eos = s["vocab"] - 1  # GPT-2's <|endoftext|> is its last token
    text = GPT2Config(
        vocab_size=s["vocab"], n_embd=s["width"], n_layer=s["layers"], n_head=s["heads"], bos_token_id=eos,
        eos_token_id=eos,
    )  # fmt: skip
    return VitGpt2ForCaptioning(VitGpt2Config(vision_config=vision, text_config=text))


def build_peer(s) -> VisionEncoderDecoderModel:
    encoder = ViTModel(
        ViTConfig(
            hidden_size=s["width"], intermediate_size=4 * s["width"], num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"], image_size=s["image"], patch_size=s["patch"],
        ),
        add_pooling_layer=False,
    )  # fmt: skip
    decoder = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=s["vocab"], n_embd=s["width"], n_layer=s["layers"], n_head=s["heads"],
            add_cross_attention=True, is_decoder=True, bos_token_id=s["vocab"] - 1, eos_token_id=s["vocab"] - 1,
        )
    )  # fmt: skip
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    model.config.decoder_start_token_id = model.config.pad_token_id = decoder.config.eos_token_id
    model.generation_config.decoder_start_token_id = decoder.config.eos_token_id
    model.generation_config.pad_token_id = decoder.config.eos_token_id
    return model


class Meter:
    def __init__(self, device: torch.device):
        self.device = device

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (never decreases)

    def seconds(self, step) -> float:
        """Wall time of one call of `step`."""
        self.synchronize()
        start = time.perf_counter()
        step()
        self.synchronize()
        return time.perf_counter() - start

    def rate(self, step, items: int, warmup: int, iterations: int) -> float:
        """Items per second over `iterations` calls of `step` after `warmup` calls."""
        for _ in range(warmup):
            step()
        self.synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        self.synchronize()
        return items * iterations / (time.perf_counter() - start)


def autocast(device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def training_step(model, optimizer, device, batch):
    def step():
        with autocast(device):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def guarded(measure):
    """Runs one measurement; a failure is recorded (and printed) instead of ending the whole run."""

    def run(name, *args, **kwargs):
        try:
            return measure(name, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any failure of one measurement is a result to report
            traceback.print_exc()
            return {f"{name}_error": f"{type(error).__name__}: {error}"[:500]}

    return run


def trainer_parts(model, device, compile=False, compile_mode=None):
    """The model to call (compiled or not) and a fresh optimizer over its trainable weights, in training mode."""
    model.to(device).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-5, fused=True)  # Trainer's default optimizer (adamw_torch_fused)
    if compile:
        torch.compiler.reset()  # a fresh compile (no dynamic-shape graph left from another measurement)
    return (torch.compile(model, mode=compile_mode) if compile else model), optimizer


@guarded
def measure_training(name, model, batch, device, meter, args, compile=False, compile_mode=None):
    progress(f"training: {name}")
    runner, optimizer = trainer_parts(model, device, compile, compile_mode)
    step = training_step(runner, optimizer, device, batch)
    meter.reset_peak()
    first_call = meter.seconds(step)  # includes compilation when compiled
    rate = meter.rate(step, len(batch["labels"]), args.warmup, args.iterations)
    return {
        f"{name}_train_samples_per_s": rate,
        f"{name}_train_peak_mib": meter.peak_mib(),
        f"{name}_train_first_step_s": first_call,
    }


def coco_like_caption_lengths(count: int, generator: torch.Generator) -> list[int]:
    """Caption lengths in GPT-2 tokens (EOS included) spread roughly like COCO's captions: mostly 10-16 tokens
    around a mean of 13, with 2% long ones of 20-32 (train.py keeps at most 32). A stand-in, not read from COCO."""
    lengths = (torch.randn(count, generator=generator) * 2.5 + 13).round().clamp(7, 32)
    long = torch.rand(count, generator=generator) < 0.02
    lengths[long] = torch.randint(20, 33, (int(long.sum()),), generator=generator).float()
    return lengths.long().tolist()


@guarded
def measure_length_grouping(name, model, features, device, meter, args, vocab):
    """Training on captions of varying length, batches in random order vs grouped by length as
    `--train_sampling_strategy group_by_length` does (transformers' LengthGroupedSampler). Both time the same number
    of batches drawn at random from one epoch's batches of that order, so neither sees only the long or short end."""
    progress(f"training: {name}, random vs length-grouped batches")
    batch_size = len(features)
    generator = torch.Generator().manual_seed(0)
    lengths = coco_like_caption_lengths(200 * batch_size, generator)  # 50-batch megabatches, as the Trainer's
    orders = {
        "random": torch.randperm(len(lengths), generator=generator).tolist(),
        "grouped": get_length_grouped_indices(lengths, batch_size, generator=generator),
    }
    runner, optimizer = trainer_parts(model, device, args.compile)
    multiple = 8 if args.compile else 1  # train.py pads to multiples of 8 when compiling
    picked = torch.randperm(len(lengths) // batch_size, generator=generator)[: args.length_batches].tolist()
    steps, results = {}, {}
    for order_name, order in orders.items():
        steps[order_name], real_tokens, padded_tokens = [], 0, 0
        for index in picked:
            batch_lengths = [lengths[i] for i in order[index * batch_size : (index + 1) * batch_size]]
            width = -(-max(batch_lengths) // multiple) * multiple
            mask = (torch.arange(width)[None, :] < torch.tensor(batch_lengths)[:, None]).long()
            ids = torch.randint(0, vocab, (batch_size, width), generator=generator)
            batch = {"vision_features": features, "labels": ids.masked_fill(mask == 0, -100).to(device)}
            steps[order_name].append(training_step(runner, optimizer, device, batch))
            real_tokens, padded_tokens = real_tokens + sum(batch_lengths), padded_tokens + width * batch_size
        results[f"{name}_{order_name}_padding_share"] = 1 - real_tokens / padded_tokens
    for step in steps["random"] + steps["grouped"]:  # warm-up: compiles every padded width first
        step()
    seconds = dict.fromkeys(orders, 0.0)
    for pair in zip(steps["random"], steps["grouped"]):  # alternating, so a slow spell of a shared machine hits both
        for order_name, step in zip(orders, pair):
            seconds[order_name] += meter.seconds(step)
    for order_name in orders:
        results[f"{name}_{order_name}_train_samples_per_s"] = batch_size * len(picked) / seconds[order_name]
    return results


@guarded
def measure_captioning(name, model, pixel_values, device, meter, args, **generate_kwargs):
    progress(f"captioning: {name}")
    model.eval()

    def run(batch):
        def step():
            with torch.inference_mode(), autocast(device):
                images = pixel_values[:batch]
                ids = model.generate(
                    pixel_values=images, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, **generate_kwargs
                )
            assert ids.shape[-1] >= NEW_TOKENS

        return step

    meter.reset_peak()
    first_call = meter.seconds(run(args.caption_batch))  # includes recording CUDA graphs on the fast path
    rate = meter.rate(run(args.caption_batch), args.caption_batch, 1, args.iterations)
    peak = meter.peak_mib()
    latency = 1.0 / meter.rate(run(1), 1, 1, args.iterations)
    return {
        f"{name}_captions_per_s": rate,
        f"{name}_latency_ms": latency * 1000,
        f"{name}_caption_peak_mib": peak,
        f"{name}_caption_first_call_s": first_call,
    }


@guarded
def measure_prompted_decoding(model, pixel_values, device, meter, args, vocab) -> dict:
    """Greedy decoding after the image and a prompt of 4-12 tokens (a batch of different lengths, left-padded as
    the processor pads): vitgpt2's decoder vs transformers' loop on the same model, and whether their tokens agree."""
    progress("prompted greedy decoding: fast path vs transformers' loop")
    generator = torch.Generator().manual_seed(1)
    batch = args.caption_batch
    lengths = torch.randint(4, 13, (batch,), generator=generator)
    mask = (torch.arange(12)[None, :] >= 12 - lengths[:, None]).long()
    prompts = torch.randint(0, vocab, (batch, 12), generator=generator).masked_fill(mask == 0, 0)
    inputs = {"pixel_values": pixel_values[:batch], "input_ids": prompts.to(device), "attention_mask": mask.to(device)}
    settings = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}
    paths = {"ours_prompted": {}, "ours_prompted_loop": {"cache_implementation": "dynamic"}}

    def run(extra):
        with torch.inference_mode(), autocast(device):
            return model.generate(**inputs, **settings, **extra)

    tokens = {name: run(extra) for name, extra in paths.items()}  # also the warm-up
    seconds = dict.fromkeys(paths, 0.0)
    for _ in range(args.iterations):  # alternating, so a slow spell of a shared machine hits both
        for name, extra in paths.items():
            seconds[name] += meter.seconds(lambda extra=extra: run(extra))
    results = {f"{name}_captions_per_s": batch * args.iterations / seconds[name] for name in paths}
    same = (tokens["ours_prompted"] == tokens["ours_prompted_loop"]).all(dim=1)
    results["ours_prompted_identical_rows"] = same.float().mean().item()
    return results


def greedy_agreement(model, pixel_values, device) -> dict:
    """Share of captions whose fast-path tokens equal transformers' loop (`cache_implementation="dynamic"`)."""
    progress("greedy agreement: fast path vs transformers' loop")
    agreement = {}
    for precision, context in (("fp32", contextlib.nullcontext()), ("autocast", autocast(device))):
        with torch.inference_mode(), context:
            fast = model.generate(pixel_values=pixel_values, max_new_tokens=NEW_TOKENS)
            plain = model.generate(pixel_values=pixel_values, max_new_tokens=NEW_TOKENS, cache_implementation="dynamic")
        same = fast.shape == plain.shape and torch.equal(fast, plain)
        rows = (fast == plain).all(dim=1).float().mean().item() if fast.shape == plain.shape else 0.0
        agreement[f"ours_greedy_identical_{precision}"] = same
        agreement[f"ours_greedy_identical_rows_{precision}"] = rows
    return agreement


def bench_ours(s, pixel_values, captions, device, meter, args) -> dict:
    results = {}
    pixels = pixel_values[: args.train_batch]
    ours = build_ours(s).to(device)
    ours.freeze(vision_tower=True)
    with torch.no_grad():
        features = ours.get_vision_features(pixels)
    # vitgpt2 reads the target from `labels` (a prompt would be `input_ids`): the caption is given once.
    batch = {"pixel_values": pixels, "labels": captions}
    results.update(measure_training("ours_frozen", ours, batch, device, meter, args))
    cached = {"vision_features": features, "labels": captions}
    results.update(measure_training("ours_frozen_cached_eager", ours, cached, device, meter, args))
    if args.compile:
        results.update(measure_training("ours_frozen_cached_compiled", ours, cached, device, meter, args, compile=True))
    if args.compile and device.type == "cuda":
        results.update(measure_training("ours_frozen_cached_compiled_cudagraphs", ours, cached, device, meter, args,
                                        compile=True, compile_mode="reduce-overhead"))  # fmt: skip
    if args.large_train_batch:
        large = {key: value.repeat(args.large_train_batch // len(value), *[1] * (value.dim() - 1))
                 for key, value in cached.items()}  # fmt: skip
        name = f"ours_frozen_cached_batch{args.large_train_batch}"
        results.update(measure_training(name, ours, large, device, meter, args, compile=args.compile))
    # The row train.py's default gives: cache, compiled where it was measured compiled.
    default = "ours_frozen_cached_compiled" if args.compile else "ours_frozen_cached_eager"
    for suffix in ("samples_per_s", "peak_mib", "first_step_s"):
        if f"{default}_train_{suffix}" in results:
            results[f"ours_default_train_{suffix}"] = results[f"{default}_train_{suffix}"]
    ours.freeze(vision_tower=False)
    results.update(measure_training("ours_full", ours, batch, device, meter, args))
    results.update(measure_captioning("ours", ours, pixel_values, device, meter, args))
    results.update(measure_captioning("ours_plain", ours, pixel_values, device, meter, args,
                                      cache_implementation="dynamic"))  # fmt: skip
    results.update(greedy_agreement(ours, pixel_values[: args.caption_batch], device))
    if device.type == "cuda":  # as a GPU deployment loads it: dtype=torch.bfloat16, nothing left for autocast to cast
        results.update(measure_captioning("ours_bf16", ours.to(torch.bfloat16), pixel_values, device, meter, args))
    return results


def bench_peer(s, pixel_values, captions, device, meter, args) -> dict:
    results = {}
    pixels = pixel_values[: args.train_batch]
    peer = build_peer(s).to(device)
    batch = {"pixel_values": pixels, "labels": captions}
    peer.encoder.requires_grad_(False)
    results.update(measure_training("peer_frozen", peer, batch, device, meter, args))
    peer.encoder.requires_grad_(True)
    results.update(measure_training("peer_full", peer, batch, device, meter, args))
    results.update(measure_captioning("peer", peer, pixel_values, device, meter, args))
    if device.type == "cuda":
        results.update(measure_captioning("peer_bf16", peer.to(torch.bfloat16), pixel_values, device, meter, args))
    return results


def bench_prompted(s, pixel_values, device, meter, args) -> dict:
    ours = build_ours(s).to(device).eval()
    return measure_prompted_decoding(ours, pixel_values, device, meter, args, s["vocab"])


def bench_length_grouping(s, pixel_values, device, meter, args) -> dict:
    """Measured last: a run cut short by a time limit has the side-by-side rows in its JSON already."""
    ours = build_ours(s).to(device)
    ours.freeze(vision_tower=True)
    with torch.no_grad():
        features = ours.get_vision_features(pixel_values[: args.train_batch])
    return measure_length_grouping("ours_lengths", ours, features, device, meter, args, s["vocab"])


def jobs_models_and_batches(quick: bool) -> dict:
    """The from-scratch jobs' own models at the jobs' sizes (train.py's defaults) with a training batch each, of random
    content (the arithmetic does not depend on it): the caption and questions jobs' ConvNeXt captioner (64 scenes of
    64 px; 12-token captions, or packed as the questions job trains: each scene's caption and 3 questions of 12 tokens
    with 2-token answers) and the reading job's reader (32 lines of 32 x 640 px, 40 characters each)."""
    from modeling_vitgpt2.data.reading.corpus import CHARSET
    from modeling_vitgpt2.training.scratch import build_character_tokenizer, build_scratch_model, build_scratch_reader

    width, batch, line_width = (32, 4, 128) if quick else (192, 64, 640)
    characters = build_character_tokenizer(CHARSET)  # a captioner's BPE vocabulary is about as small (400)
    captioner = build_scratch_model(
        characters, image_size=64, patch_size=16, vision_width=width, vision_layers=2, text_width=width,
        text_layers=2, heads=max(1, width // 64), vision_tower="convnext", vision_feature="patch",
        vision_feature_layer=-1,
    )  # fmt: skip
    reader = build_scratch_reader(
        characters, vision_width=width // 2, blocks=3, text_width=width, text_layers=2, heads=max(1, width // 64)
    )
    vocab = len(characters)
    tasks = 4  # train.py's --tasks_per_image for the questions job: the caption first, without a prompt
    answers = torch.randint(1, vocab, (batch, tasks, 12))
    answers[:, 1:, 2:] = -100
    prompts = torch.randint(1, vocab, (batch, tasks, 12))
    prompt_mask = torch.ones_like(prompts)
    prompt_mask[:, 0] = 0
    return {
        "captioner": (captioner, {"pixel_values": torch.randn(batch, 3, 64, 64),
                                  "labels": torch.randint(1, vocab, (batch, 12))}),
        "questions": (captioner, {"pixel_values": torch.randn(batch, 3, 64, 64), "input_ids": prompts,
                                  "attention_mask": prompt_mask, "labels": answers}),
        "reader": (reader, {"pixel_values": torch.randn(batch // 2, 1, 32, line_width),
                            "pixel_mask": torch.ones(batch // 2, line_width, dtype=torch.long),
                            "labels": torch.randint(1, vocab, (batch // 2, 40))}),
    }  # fmt: skip


@guarded
def measure_alternating_training(name, model, batch, meter, args, variants: dict) -> dict:
    """A job's training step under each of `variants` (name -> a context manager factory), timed alternately, so
    that a slow spell of a shared machine hits every variant."""
    progress(f"training: {name}, {' vs '.join(variants)}")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def step(variant):
        def run():
            with variant():
                loss = model(**batch).loss
            loss.backward()  # the graph remembers which operations the variant chose
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return run

    runs = {variant_name: step(variant) for variant_name, variant in variants.items()}
    for run in runs.values():
        for _ in range(args.warmup):
            run()
    seconds = dict.fromkeys(runs, 0.0)
    for _ in range(args.iterations):
        for variant_name, run in runs.items():
            seconds[variant_name] += meter.seconds(run)
    samples = len(batch["labels"]) * args.iterations
    return {f"{name}_{variant_name}_train_samples_per_s": samples / seconds[variant_name] for variant_name in runs}


def measure_jobs(args, meter, variants_of) -> dict:
    """Each from-scratch job's training step under each of `variants_of(model)` (measure_alternating_training)."""
    results = {}
    for name, (model, batch) in jobs_models_and_batches(args.quick).items():
        results.update(measure_alternating_training(f"jobs_{name}", model, batch, meter, args, variants_of(model)))
    return results


def bench_cpu_precision(args, meter) -> dict:
    """The jobs' training steps in float32 and under CPU bf16 autocast, as train.py trains where the CPU has AMX units
    (the depthwise convolutions then stay float32 and GPT-2 attends with the math kernel: modeling_vitgpt2.py)."""
    torch.set_flush_denormal(True)  # as train.py trains in bf16 on a CPU (it stays set: measured last)
    variants = {"fp32": contextlib.nullcontext, "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
    return {"cpu_has_amx": torch.cpu._is_amx_tile_supported(), **measure_jobs(args, meter, lambda model: variants)}


@contextlib.contextmanager
def onednn_depthwise(model):
    """`model`'s ConvNeXt depthwise convolutions as plain `nn.Conv2d`s for a while: oneDNN's backward pass."""
    convolutions = [module for module in model.modules() if isinstance(module, _ConvNextDepthwiseConv2d)]
    for module in convolutions:
        module.__class__ = torch.nn.Conv2d
    try:
        yield
    finally:
        for module in convolutions:
            module.__class__ = _ConvNextDepthwiseConv2d


def bench_depthwise(args, meter) -> dict:
    """The jobs' float32 training steps with the depthwise convolutions' backward pass computed from ordinary
    convolutions (modeling_vitgpt2.py, `_DepthwiseConvolution`: what train.py uses in float32 on a CPU) vs oneDNN's."""
    return measure_jobs(
        args, meter,
        lambda model: {"depthwise_fast": contextlib.nullcontext, "depthwise_onednn": partial(onednn_depthwise, model)},
    )  # fmt: skip


@contextlib.contextmanager
def gelu_in_eight_kernels(model):
    """`model`'s GPT-2 MLPs with transformers' "gelu_new" (the tanh GELU as element-wise kernels, as GPT-2's own config
    says) instead of the one-kernel "gelu_pytorch_tanh" the from-scratch models are built with (training/scratch.py)."""
    blocks = model.language_model.transformer.h
    kept = [block.mlp.act for block in blocks]
    for block in blocks:
        block.mlp.act = ACT2FN["gelu_new"]
    try:
        yield
    finally:
        for block, act in zip(blocks, kept):
            block.mlp.act = act


def bench_activation(args, meter) -> dict:
    """The jobs' float32 training steps with GPT-2's GELU in one kernel (what the from-scratch models use) vs GPT-2's
    own "gelu_new": the same function to float rounding."""
    return measure_jobs(
        args, meter,
        lambda model: {"gelu_one_kernel": contextlib.nullcontext, "gelu_new": partial(gelu_in_eight_kernels, model)},
    )  # fmt: skip


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            model = next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"CPU {model}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small configs and few iterations (seconds on CPU)")
    parser.add_argument("--train-batch", type=int, help="training batch (default: 256 GPU, 8 CPU, 2 quick)")
    parser.add_argument("--caption-batch", type=int, help="captioning batch (default: 256 GPU, 32 CPU, 4 quick)")
    parser.add_argument("--iterations", type=int, help="timed iterations per measurement (default 10, quick 2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--json", help="also write the JSON to this file (rewritten after each part of the run)")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="also train vitgpt2 with torch.compile, as train.py does on a GPU (default: on for cuda)",
    )  # fmt: skip
    parser.add_argument(
        "--large-train-batch", type=int, help="also train vitgpt2 (cached features) at this batch (default: 1024 GPU)"
    )
    parser.add_argument(
        "--length-batches", type=int,
        help="batches of COCO-like varying caption lengths timed per order, random vs length-grouped (default 8, "
        "quick 2; 0 skips)",
    )  # fmt: skip
    parser.add_argument(
        "--parts", default="ours,peer,prompted,lengths,precision,depthwise,activation",
        help="what to measure, in order: ours (vitgpt2's training and captioning rows), peer, prompted (prompted "
        "greedy decoding, vitgpt2's decoder vs transformers' loop), lengths (length grouping), precision (CPU only: "
        "the from-scratch jobs' models trained in float32 vs bf16 autocast, as train.py does on a CPU with AMX), "
        "depthwise (CPU only: those models trained in float32 with the depthwise convolutions' fast backward pass vs "
        "oneDNN's), activation (CPU only: those models trained in float32 with GPT-2's GELU in one kernel vs "
        "transformers' gelu_new)",
    )  # fmt: skip
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.compile = gpu if args.compile is None else args.compile
    args.large_train_batch = args.large_train_batch or (1024 if gpu and not args.quick else None)
    args.train_batch = args.train_batch or (2 if args.quick else 256 if gpu else 8)
    args.caption_batch = args.caption_batch or (4 if args.quick else 256 if gpu else 32)
    args.iterations = args.iterations or (2 if args.quick else 10)
    args.length_batches = (2 if args.quick else 8) if args.length_batches is None else args.length_batches
    torch.manual_seed(0)
    s = sizes(args.quick)
    meter = Meter(device)

    pixel_values = torch.randn(max(args.train_batch, args.caption_batch), 3, s["image"], s["image"], device=device)
    captions = torch.randint(0, s["vocab"], (args.train_batch, CAPTION_TOKENS), device=device)
    report = {
        "device": torch.cuda.get_device_name(device) if gpu else cpu_name(),
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "precision": "bf16 autocast" if gpu else "fp32",
        "compiled": args.compile,
        "train_batch": args.train_batch,
        "caption_batch": args.caption_batch,
        "results": {},
    }

    def record(measured: dict) -> None:
        report["results"].update(measured)
        if args.json:  # after each part, so a run cut short by a time limit keeps what it measured
            partial = Path(args.json).with_suffix(".partial")
            partial.write_text(json.dumps(report, indent=2))
            os.replace(partial, args.json)

    parts = args.parts.split(",")
    if "ours" in parts:
        record(bench_ours(s, pixel_values, captions, device, meter, args))
    if "peer" in parts:
        record(bench_peer(s, pixel_values, captions, device, meter, args))
    if "prompted" in parts:
        record(bench_prompted(s, pixel_values, device, meter, args))
    if "lengths" in parts and args.length_batches:
        record(bench_length_grouping(s, pixel_values, device, meter, args))
    if "precision" in parts and not gpu:
        record(bench_cpu_precision(args, meter))
    if "depthwise" in parts and not gpu:
        record(bench_depthwise(args, meter))
    if "activation" in parts and not gpu:
        record(bench_activation(args, meter))
    print_table(report)
    print(json.dumps(report, indent=2))


ROWS = [
    ("training, train.py's default path vs peer full (samples/s)", "ours_default_train", "peer_full_train"),
    ("training, vision frozen, no cache (samples/s)", "ours_frozen_train", "peer_frozen_train"),
    ("training, all weights (samples/s)", "ours_full_train", "peer_full_train"),
    ("captioning, batch (captions/s)", "ours_captions", "peer_captions"),
    ("captioning, 1 image (ms, lower is better)", "ours_latency", "peer_latency"),
    (
        "prompted greedy, batch: vitgpt2's decoder vs transformers' loop",
        "ours_prompted_captions",
        "ours_prompted_loop_captions",
    ),
    ("captioning, bf16 weights, batch (captions/s)", "ours_bf16_captions", "peer_bf16_captions"),
    ("captioning, bf16 weights, 1 image (ms)", "ours_bf16_latency", "peer_bf16_latency"),
    ("peak memory, full training (MiB)", "ours_full_train_peak", "peer_full_train_peak"),
    ("caption job's model, CPU bf16 vs float32 (samples/s)", "jobs_captioner_bf16_train",
     "jobs_captioner_fp32_train"),
    ("questions job's model and packing, CPU bf16 vs float32 (scenes/s)", "jobs_questions_bf16_train",
     "jobs_questions_fp32_train"),
    ("reading job's model, CPU bf16 vs float32 (samples/s)", "jobs_reader_bf16_train", "jobs_reader_fp32_train"),
    ("caption job's model, float32, depthwise backward: ours vs oneDNN's (samples/s)",
     "jobs_captioner_depthwise_fast_train", "jobs_captioner_depthwise_onednn_train"),
    ("reading job's model, float32, depthwise backward: ours vs oneDNN's (samples/s)",
     "jobs_reader_depthwise_fast_train", "jobs_reader_depthwise_onednn_train"),
    ("questions job's model and packing, float32, depthwise backward: ours vs oneDNN's (scenes/s)",
     "jobs_questions_depthwise_fast_train", "jobs_questions_depthwise_onednn_train"),
    ("caption job's model, float32, GPT-2's GELU: one kernel vs gelu_new (samples/s)",
     "jobs_captioner_gelu_one_kernel_train", "jobs_captioner_gelu_new_train"),
    ("questions job's model and packing, float32, GELU: one kernel vs gelu_new (scenes/s)",
     "jobs_questions_gelu_one_kernel_train", "jobs_questions_gelu_new_train"),
    ("reading job's model, float32, GPT-2's GELU: one kernel vs gelu_new (samples/s)",
     "jobs_reader_gelu_one_kernel_train", "jobs_reader_gelu_new_train"),
]
UNITS = {"_train": "_samples_per_s", "_captions": "_per_s", "_latency": "_ms", "_peak": "_mib"}


def _key(stem: str) -> str:
    return stem + next(unit for suffix, unit in UNITS.items() if stem.endswith(suffix))


def _number(value) -> str:
    return f"{value:>11.2f}" if isinstance(value, float) else f"{value!s:>11}"


def print_table(report):
    results = report["results"]
    print(
        f"\nvitgpt2 vs VisionEncoderDecoderModel on {report['device']} ({report['precision']}, {report['threads']} "
        f"threads, train batch {report['train_batch']}, caption batch {report['caption_batch']})"
    )
    print(f"{'measure':<62}{'ours':>11}{'peer':>11}{'ours/peer':>11}")
    for label, ours_stem, peer_stem in ROWS:
        ours, peer = results.get(_key(ours_stem), "n/a"), results.get(_key(peer_stem), "n/a")
        if ours == peer == "n/a" and not any(key.startswith((ours_stem, peer_stem)) for key in results):
            continue  # not measured on this device (the bf16-weight rows are GPU-only)
        ratio = f"{ours / peer:>10.2f}x" if isinstance(ours, float) and isinstance(peer, float) else f"{'n/a':>11}"
        print(f"{label:<62}{_number(ours)}{_number(peer)}{ratio}")
    print("\nvitgpt2 alone (what each path gives; first call = compile / CUDA-graph recording included):")
    for key, value in results.items():
        if key.startswith("ours_") and not key.startswith("ours_default_"):
            print(f"  {key:<60}{_number(value)}")
    errors = {key: value for key, value in results.items() if key.endswith("_error")}
    for key, value in errors.items():
        print(f"  FAILED {key}: {value}")
    print()


if __name__ == "__main__":
    main()
