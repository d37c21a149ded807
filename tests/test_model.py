"""Core model behaviour: generation, caching, batching, save/load, freezing, attention and dtype options."""

import json

import pytest
import torch
from conftest import CAPTIONS, CONVNEXT_PATCHES, distinct_images, tiny_model, without_dropout
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from modeling_vitgpt2 import VitGpt2Config, VitGpt2ForCaptioning, VitGpt2Projector


@pytest.fixture(scope="module")
def pixels(processor):
    return processor(images=distinct_images(4))["pixel_values"]


@pytest.mark.parametrize("variant", [{}, {"prefix_length": 3}, {"vision_feature": "patch"}, CONVNEXT_PATCHES])
@pytest.mark.parametrize("search", [{}, {"num_beams": 3}])
def test_kv_cache_gives_the_same_tokens(tokenizer, pixels, variant, search):
    model = tiny_model(tokenizer, seed=1, **variant)
    cached = model.generate(pixel_values=pixels, max_new_tokens=12, use_cache=True, **search)
    uncached = model.generate(pixel_values=pixels, max_new_tokens=12, use_cache=False, **search)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("variant", [{}, {"vision_feature": "patch"}, CONVNEXT_PATCHES])
def test_batch_gives_the_same_captions_as_one_by_one(tokenizer, pixels, variant):
    model = tiny_model(tokenizer, seed=2, **variant)
    batched = model.generate(pixel_values=pixels, max_new_tokens=10, min_new_tokens=10)
    for row, pixel_values in enumerate(pixels):
        single = model.generate(pixel_values=pixel_values[None], max_new_tokens=10, min_new_tokens=10)
        assert torch.equal(single[0], batched[row])


def test_generate_ignores_the_gold_caption_seq2seq_trainer_passes(model, processor):
    batch = processor(images=distinct_images(2), text_target=CAPTIONS[:2])
    from_image = model.generate(pixel_values=batch["pixel_values"], max_new_tokens=8)
    with_gold = model.generate(**batch, max_new_tokens=8)  # labels included, as Seq2SeqTrainer passes them
    assert torch.equal(from_image, with_gold)


def test_generate_returns_only_new_tokens_and_supports_sampling(model, pixels):
    ids = model.generate(pixel_values=pixels, max_new_tokens=7, min_new_tokens=7)
    assert ids.shape == (len(pixels), 7)
    torch.manual_seed(0)
    first = model.generate(pixel_values=pixels, do_sample=True, top_k=0, temperature=5.0, max_new_tokens=7)
    torch.manual_seed(0)
    again = model.generate(pixel_values=pixels, do_sample=True, top_k=0, temperature=5.0, max_new_tokens=7)
    assert torch.equal(first, again)
    assert not torch.equal(first, ids[:, : first.shape[1]])  # hot sampling leaves the greedy path
    beams = model.generate(pixel_values=pixels, num_beams=3, num_return_sequences=2, max_new_tokens=5)
    assert beams.shape[0] == 2 * len(pixels)


def test_loss_ignores_prefix_and_padding(model, processor):
    images = distinct_images(2)
    padded = processor(images=images, text_target=[CAPTIONS[1], CAPTIONS[2]])  # caption 1 is padded
    assert (padded["labels"][0] == -100).any()
    alone = processor(images=images[:1], text_target=[CAPTIONS[1]])
    loss_alone = model(**alone).loss
    logits = model(**padded).logits[:1]
    labels = padded["labels"][:1]
    prefix = model.config.prefix_length
    # Recompute the loss by hand from the padded batch: targets are the caption tokens only.
    manual = torch.nn.functional.cross_entropy(logits[0, prefix - 1 : -1], labels[0], ignore_index=-100)
    torch.testing.assert_close(manual, loss_alone)


def test_save_and_load_gives_identical_logits_and_only_safetensors(saved_dir, model, processor):
    files = sorted(p.name for p in saved_dir.iterdir())
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    config = json.loads((saved_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_vitgpt2.VitGpt2ForCaptioning"
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_vitgpt2.VitGpt2ForCaptioning"
    assert "image-to-text" in config["custom_pipelines"]
    for name in ("generation_config.json", "preprocessor_config.json", "processor_config.json", "tokenizer.json"):
        assert name in files

    loaded = VitGpt2ForCaptioning.from_pretrained(saved_dir).eval()
    batch = processor(images=distinct_images(3), text_target=CAPTIONS[:3])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    lm = loaded.language_model
    assert lm.lm_head.weight.data_ptr() == lm.transformer.wte.weight.data_ptr(), "GPT-2 weight tying lost"
    assert loaded.generation_config.max_new_tokens == model.generation_config.max_new_tokens


def test_auto_classes_load_the_saved_folder(saved_dir):
    assert AutoConfig.from_pretrained(saved_dir, trust_remote_code=True).model_type == "vitgpt2"
    for auto in (AutoModel, AutoModelForImageTextToText):
        assert type(auto.from_pretrained(saved_dir, trust_remote_code=True)).__name__ == "VitGpt2ForCaptioning"


def test_freeze_switches(tokenizer, processor):
    model = tiny_model(tokenizer).train()
    model.freeze(vision_tower=True, language_model=True)
    model(**processor(images=distinct_images(2), text_target=CAPTIONS[:2])).loss.backward()
    assert all(p.grad is None for p in model.vision_tower.parameters())
    assert all(p.grad is None for p in model.language_model.parameters())
    assert all(p.grad is not None for p in model.projector.parameters())
    model.freeze(vision_tower=False, language_model=False)
    assert all(p.requires_grad for p in model.parameters())


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tokenizer, processor):
    batch = processor(images=distinct_images(2), text_target=CAPTIONS[:2])
    results = []
    for checkpointing in (False, True):
        model = without_dropout(tiny_model(tokenizer, seed=3, vision_feature="patch")).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.language_model.transformer.gradient_checkpointing
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), model.projector.linear_1.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_sdpa_and_eager_attention_agree(saved_dir, processor):
    batch = processor(images=distinct_images(2), text_target=CAPTIONS[:2])
    logits = {}
    for implementation in ("eager", "sdpa"):
        model = AutoModel.from_pretrained(saved_dir, trust_remote_code=True, attn_implementation=implementation)
        assert model.language_model.config._attn_implementation == implementation
        assert model.vision_tower.config._attn_implementation == implementation
        with torch.no_grad():
            logits[implementation] = model.eval()(**batch).logits
    torch.testing.assert_close(logits["eager"], logits["sdpa"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_loading_and_generation(saved_dir, processor, dtype):
    model = AutoModel.from_pretrained(saved_dir, trust_remote_code=True, dtype=dtype, device_map="cpu")
    assert {p.dtype for p in model.parameters()} == {dtype}
    batch = processor(images=distinct_images(2), text_target=CAPTIONS[:2])
    assert torch.isfinite(model(**batch).loss)
    assert model.generate(pixel_values=batch["pixel_values"], max_new_tokens=4).shape[0] == 2


def test_config_rejects_unsupported_settings():
    with pytest.raises(ValueError, match="vision_feature"):
        VitGpt2Config(vision_feature="mean")
    with pytest.raises(ValueError, match="prefix_length"):
        VitGpt2Config(vision_feature="patch", prefix_length=2)
    with pytest.raises(ValueError, match="not supported"):
        VitGpt2Config(text_config={"model_type": "llama"})


def test_nested_configs_as_dicts_round_trip():
    config = VitGpt2Config(vision_config={"hidden_size": 48, "projection_dim": 24}, text_config={"n_embd": 64})
    assert (config.vision_config.model_type, config.text_config.model_type) == ("clip_vision_model", "gpt2")
    assert (config.vision_feature_size, config.text_config.n_embd) == (24, 64)
    again = VitGpt2Config.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()


def test_default_config_is_the_design():
    config = VitGpt2Config()
    assert config.vision_config.model_type == "clip_vision_model"
    assert (config.vision_feature_size, config.projection_hidden_size, config.text_config.n_embd) == (512, 1536, 768)
    projector = VitGpt2Projector(config)
    assert [tuple(layer.weight.shape) for layer in (projector.linear_1, projector.linear_2)] == [
        (1536, 512),
        (768, 1536),
    ]
    assert isinstance(projector.act, torch.nn.GELU)
