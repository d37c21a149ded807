"""Learning is real: the image reaches the language model."""

import pytest
from conftest import CAPTIONS, CONVNEXT_PATCHES, caption, distinct_images, tiny_model, train_on_pairs


@pytest.mark.parametrize(
    "variant",
    [{}, {"prefix_length": 4}, {"vision_feature": "patch"}, CONVNEXT_PATCHES],
    ids=["pooled", "prefix4", "patch", "convnext-patch"],
)
def test_learns_eight_distinct_captions_exactly(tokenizer, processor, variant):
    images = distinct_images(8)
    model = train_on_pairs(tiny_model(tokenizer, seed=5, **variant), processor, images, CAPTIONS, steps=300)
    assert caption(model, processor, images) == CAPTIONS
    # The caption follows the image, not its position in the batch.
    assert caption(model, processor, images[::-1]) == CAPTIONS[::-1]


@pytest.mark.parametrize("variant", [{}, CONVNEXT_PATCHES], ids=["pooled", "convnext-patch"])
def test_cannot_learn_when_images_are_shuffled_against_captions(tokenizer, processor, variant):
    images = distinct_images(8)
    model = tiny_model(tokenizer, seed=5, **variant)
    model = train_on_pairs(model, processor, images, CAPTIONS, steps=300, shuffle_pairs=True)
    exact = sum(got == want for got, want in zip(caption(model, processor, images), CAPTIONS))
    assert exact <= 2, f"{exact}/8 exact without image information: the captions leak through something else"
