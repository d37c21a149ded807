"""The image mixer (config image_mixer_layers): self-attention among the image's tokens before GPT-2 reads them, so
that each token can take in the others (the layout: where one group stands against another). The questions job's
model has one layer; saved and loaded without this repo, and decoded both ways, in test_isolated_image_tokens.py."""

import pytest
import torch
from conftest import ISOLATED, MIXED, distinct_images, tiny_model

from modeling_vitgpt2 import VitGpt2Config


@pytest.mark.parametrize("mixed", [False, True])
def test_each_image_token_takes_in_the_others_through_the_mixer_only(tokenizer, processor, mixed):
    model = tiny_model(tokenizer, seed=11, **(MIXED if mixed else ISOLATED))
    pixel_values = processor(images=distinct_images(2))["pixel_values"]
    with torch.no_grad():
        features = model.get_vision_features(pixel_values)  # (images, cells, width), one prefix token per cell
        changed = features.clone()
        changed[:, 3] += 1.0  # another object in the fourth cell
        before = model.get_image_prefix(vision_features=features)
        after = model.get_image_prefix(vision_features=changed)
    moved = (before - after).abs().amax(dim=(0, 2))  # per prefix token
    cells = features.shape[1]
    assert before.shape[1] == cells + 1  # the summary token after the cells, mixed or not
    assert moved[3] > 1e-3
    others = torch.cat([moved[:3], moved[4:cells]])
    if mixed:
        assert others.min() > 1e-4  # every other cell's token takes the change in
    else:
        assert others.max() == 0  # the projection reads each cell alone


def test_the_mixer_needs_patch_tokens():
    with pytest.raises(ValueError, match="image_mixer_layers=1: mixes the tokens of patch features"):
        VitGpt2Config(image_mixer_layers=1)  # CLIP's pooled embedding: one vector, nothing to mix
    with pytest.raises(ValueError, match="image_mixer_layers=-1"):
        VitGpt2Config(vision_feature="patch", image_mixer_layers=-1)


def test_an_image_of_another_size_is_refused_with_both_counts(tokenizer):
    model = tiny_model(tokenizer, seed=12, **MIXED)  # 32 px images, 8 px cells: 16 tokens
    larger = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="knows 16 token positions .* but the image gave 64 tokens"):
        model.get_image_prefix(larger)
