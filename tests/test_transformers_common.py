"""transformers' own common model tests (`ModelTesterMixin`, from the sdist of the installed transformers version)
run against VitGpt2ForCaptioning on a tiny config, as transformers runs them on its own models.

tests/run.sh downloads the sdist and points VITGPT2_TRANSFORMERS_TESTS at its `tests/` folder. The sdist leaves out
two modules test_modeling_common.py imports, `tests/generation/test_utils.py` (GenerationTesterMixin) and
`tests/exporters/test_export.py` (ExportTesterMixin); they are stood in for by empty classes, so their tests are not
run here (generation is tested in tests/test_prompting.py, test_model.py and test_speed.py). Every common test that
does not apply to this model is listed in NOT_APPLICABLE with the reason.
"""

import importlib
import os
import sys
import types
import unittest
from pathlib import Path

import pytest
import torch
import transformers
from transformers import CLIPVisionConfig, GPT2Config

from modeling_vitgpt2 import VitGpt2Config, VitGpt2ForCaptioning


def _common_tests_folder() -> Path | None:
    folder = os.environ.get("VITGPT2_TRANSFORMERS_TESTS")
    return Path(folder) if folder and (Path(folder) / "test_modeling_common.py").is_file() else None


FOLDER = _common_tests_folder()
if FOLDER is None:
    if os.environ.get("CI"):
        raise RuntimeError(
            "VITGPT2_TRANSFORMERS_TESTS does not point at transformers' tests/ folder: tests/run.sh fetches it"
        )
    pytest.skip("transformers' common tests not fetched (run tests/run.sh)", allow_module_level=True)
if f"transformers-{transformers.__version__}" not in str(FOLDER):
    raise RuntimeError(
        f"{FOLDER} holds another version's tests than the installed transformers {transformers.__version__}"
    )


def _import_common_tests():
    """test_modeling_common.py as the module `transformers_tests.test_modeling_common`, with the two modules the sdist
    does not ship stood in for by empty mixins."""
    package = types.ModuleType("transformers_tests")
    package.__path__ = [str(FOLDER)]
    sys.modules["transformers_tests"] = package
    for name, mixin in (
        ("exporters.test_export", "ExportTesterMixin"),
        ("generation.test_utils", "GenerationTesterMixin"),
    ):
        parent = f"transformers_tests.{name.split('.')[0]}"
        sys.modules.setdefault(parent, types.ModuleType(parent)).__path__ = []
        module = types.ModuleType(f"transformers_tests.{name}")
        setattr(module, mixin, type(mixin, (), {}))
        sys.modules[module.__name__] = module
    return importlib.import_module("transformers_tests.test_modeling_common")


common = _import_common_tests()

NOT_APPLICABLE = {
    # Generation and export testers are not in the sdist (see the module docstring).
    "test_generation_tester_mixin_inheritance": "GenerationTesterMixin is not shipped in the sdist; generation is "
    "tested in test_prompting.py / test_model.py / test_speed.py",
    # Architecture: GPT-2 reads [image prefix, prompt, target]; inputs and outputs are not a text model's.
    "test_correct_missing_keys": "it saves `model.base_model` (GPT-2, with GPT-2's config) and loads that folder "
    "as vitgpt2: a GPT-2 checkpoint is not a vitgpt2 config; GPT-2 weights go in through from_vision_text_pretrained",
}


class VitGpt2ModelTester:
    """A tiny vitgpt2 (CLIP vision, patch features, GPT-2) and a batch with an image and a prompt."""

    def __init__(self, parent, batch_size=3, prompt_length=5, vocab_size=99, image_size=16, patch_size=8):
        self.parent = parent
        self.batch_size, self.prompt_length = batch_size, prompt_length
        self.vocab_size, self.image_size, self.patch_size = vocab_size, image_size, patch_size
        self.num_hidden_layers, self.hidden_size, self.num_attention_heads = 2, 32, 4
        self.is_training = True
        # What the common tests count: GPT-2 sees the image's patches, then the prompt.
        self.seq_length = (image_size // patch_size) ** 2 + prompt_length

    def get_config(self) -> VitGpt2Config:
        vision = CLIPVisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=self.image_size, patch_size=self.patch_size, projection_dim=32,
        )  # fmt: skip
        text = GPT2Config(
            vocab_size=self.vocab_size, n_embd=self.hidden_size, n_layer=self.num_hidden_layers,
            n_head=self.num_attention_heads, n_positions=64, bos_token_id=0, eos_token_id=0, pad_token_id=0,
        )  # fmt: skip
        return VitGpt2Config(vision_config=vision, text_config=text, vision_feature="patch", vision_feature_layer=-1)

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        pixel_values = common.floats_tensor([self.batch_size, 3, self.image_size, self.image_size])
        input_ids = common.ids_tensor([self.batch_size, self.prompt_length], self.vocab_size - 1) + 1
        attention_mask = torch.ones_like(input_ids)
        return config, {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


class VitGpt2CommonTest(common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (VitGpt2ForCaptioning,)
    pipeline_model_mapping = {}
    test_resize_embeddings = True
    _is_composite = True
    # With patch features (as LLaVA) the CLIP tower's pooled head (post_layernorm, visual_projection) is unused.
    test_all_params_have_gradient = False

    def setUp(self):
        self.model_tester = VitGpt2ModelTester(self)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if return_labels:  # the target, a caption after the prompt: the same on every call (tests compare calls)
            inputs["labels"] = inputs["input_ids"].flip(1)[:, :4].clone()
        return inputs


def _skip_not_applicable():
    for name, reason in NOT_APPLICABLE.items():
        if hasattr(VitGpt2CommonTest, name):
            setattr(VitGpt2CommonTest, name, unittest.skip(reason)(getattr(VitGpt2CommonTest, name)))


_skip_not_applicable()
