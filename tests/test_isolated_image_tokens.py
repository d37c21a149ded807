"""Isolated image tokens (config isolate_image_tokens): inside GPT-2 each image token attends to itself only, in
training (rows and packed), in the fast greedy decoder and in transformers' loop (beams, sampling), and in a process
that loads the saved folder without this repo."""

import json
import os
import sys
import textwrap

import pytest
import torch
from conftest import CONVNEXT_PATCHES, ISOLATED, ISOLATED_USER_PRELUDE, distinct_images, run_isolated, tiny_model

from modeling_vitgpt2 import VitGpt2Config

PROMPTS = ["a red", "two small blue squares", "", "three purple hearts in"]


def image_token_states(model, vision_features):
    """GPT-2's hidden states (layers, batch, tokens, width) at the image's tokens, reading the image alone."""
    prefix = model.get_image_prefix(vision_features=vision_features)
    output = model(vision_features=vision_features, output_hidden_states=True)
    return torch.stack(output.hidden_states)[:, :, : prefix.shape[1]]


@pytest.mark.parametrize("isolated", [False, True])
def test_an_image_token_sees_no_other_image_token(tokenizer, processor, isolated):
    model = tiny_model(tokenizer, seed=5, **(ISOLATED if isolated else CONVNEXT_PATCHES))
    pixel_values = processor(images=distinct_images(2))["pixel_values"]
    with torch.no_grad():
        features = model.get_vision_features(pixel_values)  # (images, cells, width), one prefix token per cell
        changed = features.clone()
        changed[:, 3] += 1.0  # another object in the fourth cell
        before, after = image_token_states(model, features), image_token_states(model, changed)
    cells = features.shape[1]
    moved = (before - after).abs().amax(dim=(0, 1, 3))  # per token, over layers, images and width
    assert moved[3] > 1e-3  # the changed cell's own token
    if isolated:
        assert before.shape[2] == cells + 1  # the summary token after the cells
        assert moved[:3].max() == 0 and moved[4:cells].max() == 0  # no other cell's token changes, in any layer
        assert moved[cells] > 1e-3  # the summary token reads every cell
    else:
        assert before.shape[2] == cells
        assert moved[4:].min() > 1e-3  # causal attention: every later cell's token takes the change in


@pytest.mark.parametrize(
    "search", [{"num_beams": 3}, {"do_sample": True, "top_k": 0}, {"cache_implementation": "dynamic"}]
)
def test_transformers_loop_reads_the_image_as_training_does(tokenizer, processor, search):
    """The loop's first scores are forward()'s logits at the prompt's end: the loop's prefill isolates the tokens."""
    model = tiny_model(tokenizer, seed=6, **ISOLATED)
    for prompts in (PROMPTS, None):  # padded prompts; captions (transformers then drops the mask of ones)
        inputs = processor(images=distinct_images(4), text=prompts)
        with torch.no_grad():
            logits = model(**inputs).logits[:, -1]
        output = model.generate(**inputs, **search, max_new_tokens=3, output_logits=True, return_dict_in_generate=True)
        first = output.logits[0].view(4, -1, logits.shape[-1])  # (images, beams or 1, vocabulary)
        for row in range(first.shape[1]):
            torch.testing.assert_close(first[:, row], logits, atol=1e-5, rtol=1e-5)


def test_fast_decoder_and_transformers_loop_agree(tokenizer, processor):
    model = tiny_model(tokenizer, seed=7, **ISOLATED)
    images = distinct_images(4)
    for prompts in (PROMPTS, ["a red circle"] * 4, None):  # padded, unpadded, no prompt
        inputs = processor(images=images, text=prompts)
        fast = model.generate(**inputs, max_new_tokens=9, min_new_tokens=3)
        loop = model.generate(**inputs, max_new_tokens=9, min_new_tokens=3, cache_implementation="dynamic")
        assert torch.equal(fast, loop)


def test_readers_cannot_isolate_their_columns():
    with pytest.raises(ValueError, match="isolate_image_tokens"):
        VitGpt2Config(vision_config={"model_type": "convnext"}, vision_feature="columns", isolate_image_tokens=True)


USER_SCRIPT = ISOLATED_USER_PRELUDE + textwrap.dedent(
    """
    import torch
    inputs = processor(images=images, text=["a red", "", "two small blue squares"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1]
    beams = model.generate(**inputs, max_new_tokens=2, num_beams=3, output_logits=True, return_dict_in_generate=True)
    print(json.dumps({
        "summary_token": model.image_summary_token.flatten()[:4].tolist(),
        "greedy": model.generate(**inputs, max_new_tokens=6).tolist(),
        "forward": logits[:, :4].tolist(),
        "beams_off_forward": (beams.logits[0].view(len(images), 3, -1) - logits[:, None]).abs().max().item(),
    }))
    """
)


def test_saved_isolated_model_answers_the_same_without_this_repo(tokenizer, processor, tmp_path):
    model = tiny_model(tokenizer, seed=8, **ISOLATED)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    images = distinct_images(3)
    paths = [str(tmp_path / f"{index}.png") for index in range(3)]
    for image, path in zip(images, paths):
        image.save(path)
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    inputs = processor(images=images, text=["a red", "", "two small blue squares"])
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1]
    pythons = [sys.executable]
    if os.environ.get("VITGPT2_TRANSFORMERS4_PYTHON"):  # CI sets it (tests/run.sh): the Hub code runs on 4.57 too
        pythons.append(os.environ["VITGPT2_TRANSFORMERS4_PYTHON"])
    for python in pythons:
        args = [str(tmp_path / "user.py"), str(tmp_path / "model"), *paths]
        result = run_isolated(args, cwd=tmp_path, python=python)
        assert result.returncode == 0, (python, result.stderr[-3000:])
        got = json.loads(result.stdout.strip().splitlines()[-1])
        assert got["summary_token"] == model.image_summary_token.flatten()[:4].tolist()  # saved, not drawn anew
        assert got["greedy"] == model.generate(**inputs, max_new_tokens=6).tolist(), python
        torch.testing.assert_close(torch.tensor(got["forward"]), logits[:, :4], atol=1e-5, rtol=1e-5)
        assert got["beams_off_forward"] < 1e-5, python  # the loop's prefill isolates the tokens there too
