"""from_vision_text_pretrained on locally saved tiny CLIP / ViT / SigLIP and GPT-2 checkpoints — the same call users
make with hub ids such as ("openai/clip-vit-base-patch32", "gpt2")."""

import pytest
import torch
from conftest import VISION, distinct_images, save_clip
from transformers import (
    GPT2LMHeadModel,
    SiglipConfig,
    SiglipModel,
    ViTConfig,
    ViTModel,
)

from modeling_vitgpt2 import VitGpt2ForCaptioning, VitGpt2Processor


def save_vit(folder):
    model = ViTModel(ViTConfig(**VISION, patch_size=8), add_pooling_layer=False)
    model.save_pretrained(folder)
    return {"": model}


def save_siglip(folder):
    config = SiglipConfig(
        vision_config={**VISION, "patch_size": 8},
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4),
    )
    model = SiglipModel(config)
    model.save_pretrained(folder)
    return {"": model.vision_model}  # transformers 5 flattens SiglipVisionModel


@pytest.mark.parametrize(
    "save, expected_feature_size", [(save_clip, 24), (save_vit, 32), (save_siglip, 32)], ids=["clip", "vit", "siglip"]
)
def test_builds_from_pretrained_vision_and_text_checkpoints(tmp_path, gpt2_dir, save, expected_feature_size):
    torch.manual_seed(1)
    source_parts = save(tmp_path)
    model = VitGpt2ForCaptioning.from_vision_text_pretrained(str(tmp_path), str(gpt2_dir))
    assert model.config.vision_feature_size == expected_feature_size
    assert model.projector.linear_1.in_features == expected_feature_size

    # Every pretrained weight arrived unchanged; the GPT-2 tying still holds.
    for prefix, part in source_parts.items():
        tower = model.vision_tower if not prefix else getattr(model.vision_tower, prefix)
        for name, tensor in part.state_dict().items():
            assert torch.equal(tower.state_dict()[name], tensor), f"{prefix}.{name} differs from the checkpoint"
    gpt2 = GPT2LMHeadModel.from_pretrained(gpt2_dir)
    for name, tensor in gpt2.state_dict().items():
        assert torch.equal(model.language_model.state_dict()[name], tensor), name
    lm = model.language_model
    assert lm.lm_head.weight.data_ptr() == lm.transformer.wte.weight.data_ptr()

    pixels = torch.randn(2, 3, 32, 32)
    assert model.generate(pixel_values=pixels, max_new_tokens=3).shape == (2, 3)


def test_processor_from_pretrained_parts(tmp_path, gpt2_dir):
    save_clip(tmp_path)
    processor = VitGpt2Processor.from_vision_text_pretrained(str(tmp_path), str(gpt2_dir))
    batch = processor(images=distinct_images(2), text_target=["a red circle", "two blue squares"])
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    eos = processor.tokenizer.eos_token_id
    last = (batch["labels"] != -100).sum(1) - 1
    assert [batch["labels"][row, last[row]].item() for row in range(2)] == [eos, eos]


def test_unsupported_vision_checkpoint_is_named(tmp_path, gpt2_dir):
    with pytest.raises(ValueError, match=str(gpt2_dir)):
        VitGpt2ForCaptioning.from_vision_text_pretrained(str(gpt2_dir), str(gpt2_dir))
