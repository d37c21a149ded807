"""The fast paths keep results exact: greedy captions equal transformers' loop; compiled, bf16-autocast and
padded-to-a-multiple training steps give the plain path's losses and gradients (within bf16 tolerance); the feature
cache, filled in data-loader workers, gives the vision tower's own features."""

from concurrent.futures import ThreadPoolExecutor

import datasets
import pytest
import torch
from conftest import (
    CAPTIONS,
    CONVNEXT_PATCHES,
    distinct_images,
    evaluation_trainer,
    tiny_model,
    train_on_pairs,
    without_dropout,
)
from PIL import Image, ImageDraw
from transformers.activations import ACT2FN

from modeling_vitgpt2 import decoding_vitgpt2
from modeling_vitgpt2.data.feature_cache import VisionFeatureCache
from modeling_vitgpt2.training.scratch import build_character_tokenizer, build_reader_processor, build_scratch_reader


@pytest.mark.parametrize("variant", [{}, {"prefix_length": 3}, {"vision_feature": "patch"}])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "bf16 autocast"])
def test_fast_greedy_decoding_gives_transformers_tokens(tokenizer, processor, variant, precision):
    model = train_on_pairs(tiny_model(tokenizer, seed=5, **variant), processor, distinct_images(8), CAPTIONS, 60)
    model.to(torch.bfloat16 if precision == "bf16" else torch.float32)
    pixels = processor(images=distinct_images(8))["pixel_values"]

    def assert_fast_equals_plain(**setting):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16 autocast"):
            fast = model.generate(pixel_values=pixels, **setting)
            assert len(decoding_vitgpt2._decoders.get(model.language_model, ())) > 0, "the fast path did not run"
            assert torch.equal(fast, model.generate(pixel_values=pixels, cache_implementation="dynamic", **setting))

    assert_fast_equals_plain(max_new_tokens=40)  # every caption ends with EOS, at different lengths
    assert_fast_equals_plain(max_new_tokens=40, synced_gpus=False)  # as Seq2SeqTrainer's evaluation calls it
    with torch.inference_mode():  # as pipelines call it; then again outside, with the same shapes
        assert_fast_equals_plain(max_new_tokens=40)
    assert_fast_equals_plain(max_new_tokens=40)
    assert_fast_equals_plain(max_new_tokens=5)  # the budget ends them
    assert_fast_equals_plain(max_new_tokens=12, min_new_tokens=9)
    assert_fast_equals_plain(max_new_tokens=30, eos_token_id=[3, 7], pad_token_id=11)
    with torch.no_grad():  # trained in place between calls (as between Seq2SeqTrainer evaluations): seen by the next
        for parameter in model.language_model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    assert_fast_equals_plain(max_new_tokens=40)
    for setting in ({"num_beams": 2}, {"repetition_penalty": 1.5}, {"use_cache": False}, {"output_scores": True}):
        decoding_vitgpt2._decoders.pop(model.language_model, None)
        model.generate(pixel_values=pixels, max_new_tokens=6, **setting)
        assert model.language_model not in decoding_vitgpt2._decoders, f"{setting} must use transformers' loop"


def test_seq2seq_trainer_evaluation_decodes_every_batch_fast(tokenizer, processor, tmp_path):
    # After its first batch, Seq2SeqTrainer writes transformers' implied defaults (num_beams=1, top_k=50, ...) into
    # the model's generation_config: the fast decoder must still take the later batches, and give the same tokens.
    model = tiny_model(tokenizer, seed=3)
    images = distinct_images(6)
    data = datasets.Dataset.from_dict({"image": images, "captions": [[caption] for caption in CAPTIONS[:6]]})
    evaluation_trainer(model, processor, tmp_path).predict(data)
    assert model.generation_config.num_beams == 1 and model.generation_config.top_k == 50  # what it wrote
    decoding_vitgpt2._decoders.pop(model.language_model, None)
    pixels = processor(images=images)["pixel_values"]
    fast = model.generate(pixel_values=pixels, max_new_tokens=8, synced_gpus=False)  # as the trainer calls it
    assert model.language_model in decoding_vitgpt2._decoders, "evaluation fell back to transformers' loop"
    assert torch.equal(fast, model.generate(pixel_values=pixels, max_new_tokens=8, cache_implementation="dynamic"))


def test_fast_greedy_decoding_is_safe_from_several_threads(model, processor):
    # A server (Gradio, an endpoint) may caption from several threads at once: same shapes, shared buffers.
    batches = [processor(images=distinct_images(16, seed=seed))["pixel_values"] for seed in range(24)]
    expected = [model.generate(pixel_values=pixels, max_new_tokens=12, min_new_tokens=12) for pixels in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda p: model.generate(pixel_values=p, max_new_tokens=12, min_new_tokens=12), batches)
        )
    for got, want in zip(results, expected):
        assert torch.equal(got, want)


def training_step_loss(model, batch, autocast_dtype=None):
    """One forward and backward pass from zeroed gradients, under CPU autocast to `autocast_dtype` if given."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        loss = model(**batch).loss
    loss.backward()
    return loss.detach()


def loss_and_every_gradient(model, batch, autocast_dtype=None):
    loss = training_step_loss(model, batch, autocast_dtype)
    return loss, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def loss_and_gradients(model, batch, autocast_dtype=None):
    loss = training_step_loss(model, batch, autocast_dtype)
    return loss, model.projector.linear_1.weight.grad.clone(), model.get_input_embeddings().weight.grad.clone()


@pytest.fixture
def frozen_model_and_batch(tokenizer, processor):
    """A frozen-vision model in training mode and a cached-features batch, as train.py's default path trains."""
    model = without_dropout(tiny_model(tokenizer, seed=3))
    model.freeze(vision_tower=True)
    model.train()
    text = processor.tokenize_targets(CAPTIONS[:4])
    pixel_values = processor(images=distinct_images(4))["pixel_values"]
    with torch.no_grad():
        features = model.get_vision_features(pixel_values)
    return model, {"vision_features": features, **text}


def test_compiled_training_step_gives_the_eager_loss_and_gradients(frozen_model_and_batch):
    model, batch = frozen_model_and_batch
    eager = loss_and_gradients(model, batch)
    torch.compiler.reset()
    compiled = loss_and_gradients(torch.compile(model), batch)
    for plain, fast in zip(eager, compiled):
        torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_loss_is_the_fp32_loss_within_bf16_tolerance(frozen_model_and_batch):
    model, batch = frozen_model_and_batch
    fp32, bf16 = loss_and_gradients(model, batch), loss_and_gradients(model, batch, autocast_dtype=torch.bfloat16)
    torch.testing.assert_close(bf16[0], fp32[0], rtol=2e-2, atol=0)


def test_from_scratch_gpt2s_one_kernel_gelu_trains_as_gpt2s_gelu_new(tokenizer, processor):
    # From-scratch models run GPT-2's tanh GELU in one kernel (training/scratch.py) for speed; it must be GPT-2's
    # own function ("gelu_new"), not merely a GELU: the exact erf GELU differs by up to 5e-4.
    model = without_dropout(tiny_model(tokenizer, seed=4, **CONVNEXT_PATCHES)).train()
    activation = model.config.text_config.activation_function
    inputs = torch.linspace(-8, 8, 10001)
    torch.testing.assert_close(ACT2FN[activation](inputs), ACT2FN["gelu_new"](inputs), rtol=0, atol=1e-6)
    batch = {**processor(images=distinct_images(4)), **processor.tokenize_targets(CAPTIONS[:4])}
    one_kernel = loss_and_every_gradient(model, batch)
    for block in model.language_model.transformer.h:
        assert type(block.mlp.act) is type(ACT2FN[activation])  # the config's activation is the one that runs
        block.mlp.act = ACT2FN["gelu_new"]
    torch.testing.assert_close(one_kernel, loss_and_every_gradient(model, batch), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["reader", "convnext captioner"])
def test_cpu_bf16_training_step_is_the_fp32_step_within_bf16_tolerance(tokenizer, processor, kind):
    # Under CPU bf16 autocast the ConvNeXt's depthwise convolutions stay float32 and GPT-2 attends with the math
    # kernel (for speed); the step must still be the float32 step, every weight's gradient included.
    if kind == "reader":
        characters = build_character_tokenizer("abcdefghijklmnopqrstuvwxyz ")
        torch.manual_seed(0)
        model = build_scratch_reader(characters, vision_width=32, blocks=2, text_width=32, text_layers=2, heads=2)
        lines = ["a line", "another, longer line", "", "xyz"]
        images = [Image.new("L", (40 + 30 * len(text), 32), 255) for text in lines]
        for image, text in zip(images, lines):
            ImageDraw.Draw(image).text((4, 8), text, fill=0)
        batch = build_reader_processor(characters, model.config)(images=images, text_target=lines)
    else:
        model = tiny_model(tokenizer, seed=3, **CONVNEXT_PATCHES)
        batch = {**processor(images=distinct_images(4)), **processor.tokenize_targets(CAPTIONS[:4])}
    model = without_dropout(model).train()
    fp32_loss, fp32_grads = loss_and_every_gradient(model, batch)
    bf16_loss, bf16_grads = loss_and_every_gradient(model, batch, torch.bfloat16)  # as train.py trains on an AMX CPU
    torch.testing.assert_close(bf16_loss, fp32_loss, rtol=2e-2, atol=0)
    assert bf16_grads.keys() == fp32_grads.keys() and any(name.startswith("vision_tower.") for name in fp32_grads)
    for name, expected in fp32_grads.items():
        assert bf16_grads[name].isfinite().all(), name
        # bf16 keeps 8 bits of mantissa: each gradient points the fp32 one's way, whole tensor by whole tensor
        cosine = torch.nn.functional.cosine_similarity(bf16_grads[name].flatten(), expected.flatten(), dim=0)
        assert cosine > 0.99 or expected.norm() < 1e-6, f"{name}: cosine {cosine:.3f}"


def test_fused_adamw_trains_like_the_for_each_one(tokenizer, frozen_model_and_batch):
    _, batch = frozen_model_and_batch
    trained = {}
    for fused in (False, True):
        model = tiny_model(tokenizer, seed=3)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused, foreach=None if fused else True)
        losses = []
        for _ in range(3):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.detach())
        trained[fused] = (torch.stack(losses), model.projector.linear_2.weight.detach())
    for plain, fast in zip(trained[False], trained[True]):
        torch.testing.assert_close(fast, plain)


def test_padding_captions_to_a_multiple_of_8_changes_no_loss(frozen_model_and_batch, processor):
    model, batch = frozen_model_and_batch
    padded = processor.tokenize_targets(CAPTIONS[:4], pad_to_multiple_of=8)
    assert padded["labels"].shape[1] % 8 == 0 and padded["labels"].shape[1] > batch["labels"].shape[1]
    plain = loss_and_gradients(model, batch)
    fast = loss_and_gradients(model, {**batch, **padded})
    for expected, actual in zip(plain, fast):
        torch.testing.assert_close(actual, expected)


def test_feature_cache_filled_in_workers_gives_the_vision_towers_features(tmp_path, model, processor):
    images = distinct_images(10)
    files = []
    for index, image in enumerate(images + images[:3]):  # three repeats: cached once, read three times more
        files.append(tmp_path / f"{index}.png")
        image.save(files[-1])
    dataset = datasets.Dataset.from_dict({"image": [str(file) for file in files]})
    dataset = dataset.cast_column("image", datasets.Image(decode=False))
    cache = VisionFeatureCache(model, processor, tmp_path / "cache")
    cache.fill(dataset, batch_size=4, num_workers=2)
    assert cache.computed == 10
    cache.fill(dataset, batch_size=4, num_workers=2)
    assert cache.computed == 10  # nothing computed twice, across batches and runs

    features = cache.features(dataset["image"])
    with torch.no_grad():
        expected = model.get_vision_features(processor(images=images + images[:3])["pixel_values"])
    torch.testing.assert_close(features, expected)
    assert cache.computed == 10 and cache.reused == 13
