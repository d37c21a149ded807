"""The captioner: vision tower → projection MLP → prefix tokens in front of GPT-2."""

import copy

import torch
from torch import nn
from transformers import (
    AutoConfig,
    CLIPVisionModelWithProjection,
    GenerationMixin,
    GPT2LMHeadModel,
    PreTrainedModel,
    SiglipVisionModel,
    ViTModel,
)
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

from .configuration_vitgpt2 import VitGpt2Config
from .decoding_vitgpt2 import can_decode_fast, greedy_decode
from .pipeline_vitgpt2 import TASK, VitGpt2CaptioningPipeline

# Keys Seq2SeqTrainer (and users copying a training batch) pass to generate() that describe the gold caption.
_GOLD_CAPTION_KEYS = ("input_ids", "attention_mask", "labels", "decoder_input_ids", "decoder_attention_mask")
DEFAULT_MAX_NEW_TOKENS = 32


def build_vision_tower(vision_config) -> PreTrainedModel:
    if vision_config.model_type == "clip_vision_model":
        return CLIPVisionModelWithProjection(vision_config)
    if vision_config.model_type == "vit":
        return ViTModel(vision_config, add_pooling_layer=False)
    return SiglipVisionModel(vision_config)


def load_vision_tower(name_or_path, **kwargs) -> PreTrainedModel:
    """Loads the vision half of a CLIP, ViT or SigLIP checkpoint (hub id or local folder)."""
    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    model_type = config.model_type
    if model_type == "clip":
        # The image projection's width is the full CLIP config's projection_dim, not its vision config's default.
        vision_config = config.vision_config
        vision_config.projection_dim = config.projection_dim
        return CLIPVisionModelWithProjection.from_pretrained(name_or_path, config=vision_config, **kwargs)
    if model_type == "clip_vision_model":
        return CLIPVisionModelWithProjection.from_pretrained(name_or_path, **kwargs)
    if model_type == "vit":
        return ViTModel.from_pretrained(name_or_path, add_pooling_layer=False, **kwargs)
    if model_type in ("siglip", "siglip_vision_model"):
        return SiglipVisionModel.from_pretrained(name_or_path, **kwargs)
    raise ValueError(f"{name_or_path}: vision checkpoint of type {model_type!r} is not supported (CLIP, ViT, SigLIP)")


class VitGpt2Projector(nn.Module):
    """Linear → GELU → Linear from vision features into GPT-2's embedding space (ClipCap's / LLaVA's MLP)."""

    def __init__(self, config: VitGpt2Config):
        super().__init__()
        out_features = config.text_config.n_embd * config.prefix_length
        self.linear_1 = nn.Linear(config.vision_feature_size, config.projection_hidden_size)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(config.projection_hidden_size, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


class VitGpt2PreTrainedModel(PreTrainedModel):
    config_class = VitGpt2Config
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPEncoderLayer", "ViTLayer", "SiglipEncoderLayer", "GPT2Block"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flash_attn_2 = True
    _supports_cache_class = True


class VitGpt2ForCaptioning(VitGpt2PreTrainedModel, GenerationMixin):
    """Captions an image: `generate(pixel_values)` returns caption token ids only (no prefix, no prompt)."""

    def __init__(self, config: VitGpt2Config):
        super().__init__(config)
        self.vision_tower = build_vision_tower(config.vision_config)
        self.projector = VitGpt2Projector(config)
        self.language_model = GPT2LMHeadModel(config.text_config)
        self.language_model.loss_type = "ForCausalLM"  # its class name does not tell transformers 5 which loss
        self.post_init()
        if self.generation_config.max_new_tokens is None:
            self.generation_config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS

    @classmethod
    def from_vision_text_pretrained(cls, vision_model_name_or_path, text_model_name_or_path, **config_kwargs):
        """Builds a captioner from a pretrained CLIP/ViT/SigLIP checkpoint and a pretrained GPT-2 checkpoint.

        The projection MLP is freshly initialised; everything else keeps its pretrained weights.
        """
        vision_tower = load_vision_tower(vision_model_name_or_path)
        language_model = GPT2LMHeadModel.from_pretrained(text_model_name_or_path)
        config = cls.config_class(vision_config=vision_tower.config, text_config=language_model.config, **config_kwargs)
        model = cls(config)
        model.vision_tower.load_state_dict(vision_tower.state_dict())
        model.language_model.load_state_dict(language_model.state_dict())
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also records the `image-to-text` pipeline and `AutoModelForImageTextToText` in config.json, so that
        `model.save_pretrained(d)` + `processor.save_pretrained(d)` is a complete Hub folder. transformers copies
        this module and its relative imports (configuration, pipeline); the processor copies the processing module."""
        module = VitGpt2ForCaptioning.__module__.split(".")[-1]
        pipeline_module = VitGpt2CaptioningPipeline.__module__.split(".")[-1]
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            "AutoModelForImageTextToText": f"{module}.{type(self).__name__}",
        }
        self.config.custom_pipelines = {
            TASK: {
                "impl": f"{pipeline_module}.{VitGpt2CaptioningPipeline.__name__}",
                "pt": ["AutoModel"],
                "tf": [],
                "type": "multimodal",
            }
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def freeze(self, vision_tower: bool = True, language_model: bool = False) -> None:
        """Stops gradients to the vision tower and/or GPT-2; the projection always trains."""
        for module, frozen in ((self.vision_tower, vision_tower), (self.language_model, language_model)):
            module.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        # A frozen part is a fixed function: no dropout, so cached and recomputed vision features agree.
        for part in (self.vision_tower, self.language_model):
            if not any(parameter.requires_grad for parameter in part.parameters()):
                part.eval()
        return self

    def get_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The vision tower's output the projection reads: (batch, features) pooled or (batch, patches, features)."""
        config = self.config
        pixel_values = pixel_values.to(device=self.device, dtype=self.vision_tower.dtype)
        model_type = config.vision_config.model_type
        if config.vision_feature == "patch":
            hidden = self.vision_tower(pixel_values, output_hidden_states=True).hidden_states
            patches = hidden[config.vision_feature_layer]
            return patches if model_type == "siglip_vision_model" else patches[:, 1:]  # drop [CLS]
        output = self.vision_tower(pixel_values)
        if model_type == "clip_vision_model":
            return output.image_embeds
        if model_type == "vit":
            return output.last_hidden_state[:, 0]
        return output.pooler_output

    def get_image_features(self, pixel_values=None, vision_features=None) -> torch.Tensor:
        """Prefix embeddings (batch, prefix tokens, GPT-2 width) from pixels or from precomputed vision features."""
        if vision_features is None:
            if pixel_values is None:
                raise ValueError("pass pixel_values (images) or vision_features (cached vision tower output)")
            vision_features = self.get_vision_features(pixel_values)
        vision_features = vision_features.to(device=self.device, dtype=self.projector.linear_1.weight.dtype)
        prefix = self.projector(vision_features)
        batch_size = prefix.shape[0]
        prefix = prefix.view(batch_size, -1, self.config.text_config.n_embd)
        return prefix.to(self.language_model.dtype)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        vision_features: torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithCrossAttentions:
        """Logits over [prefix, caption]; the loss covers caption tokens whose label is not -100."""
        prefix = self.get_image_features(pixel_values, vision_features)
        batch_size, prefix_length = prefix.shape[:2]
        prefix_mask = torch.ones(batch_size, prefix_length, dtype=torch.long, device=prefix.device)
        inputs_embeds, mask = prefix, prefix_mask
        if input_ids is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            inputs_embeds = torch.cat([prefix, self.get_input_embeddings()(input_ids)], dim=1)
            mask = torch.cat([prefix_mask, attention_mask.to(prefix_mask.dtype)], dim=1)
        if labels is not None:
            ignore = torch.full((batch_size, prefix_length), -100, dtype=labels.dtype, device=labels.device)
            labels = torch.cat([ignore, labels], dim=1)
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=mask, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(self, pixel_values=None, vision_features=None, generation_config=None, **kwargs):
        """Caption token ids for each image: greedy, beam search or sampling, as `generation_config`/kwargs say.

        The caption comes from the image alone: a gold caption passed in (as Seq2SeqTrainer does) is ignored.
        `max_length`, like `max_new_tokens`, counts caption tokens only. Plain greedy decoding runs on preallocated
        keys/values and, on a GPU, replays CUDA graphs (`decoding_vitgpt2.py`); the tokens are the same as
        transformers' loop, which `cache_implementation="dynamic"` asks for and every other setting gets.
        """
        for key in _GOLD_CAPTION_KEYS:
            kwargs.pop(key, None)
        if "max_length" in kwargs and "max_new_tokens" not in kwargs:
            # As for encoder-decoder captioners, max_length counts caption tokens: the image prefix is not text.
            kwargs["max_new_tokens"] = kwargs.pop("max_length")
        generation_config = copy.deepcopy(
            generation_config if generation_config is not None else self.generation_config
        )
        model_kwargs = generation_config.update(**kwargs)  # returns the kwargs that are not generation settings
        if generation_config.max_new_tokens is not None:
            generation_config.max_length = None  # max_new_tokens wins anyway; this avoids a spurious clash warning
        prefix = self.get_image_features(pixel_values, vision_features)
        # Seq2SeqTrainer always passes synced_gpus; only True (ranks step together, ZeRO-3) needs transformers' loop.
        if not model_kwargs.get("synced_gpus"):
            model_kwargs.pop("synced_gpus", None)
            if can_decode_fast(self.language_model, generation_config, model_kwargs, prefix.shape[1]):
                return greedy_decode(self.language_model, prefix, generation_config)
        mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        return self.language_model.generate(
            inputs_embeds=prefix, attention_mask=mask, generation_config=generation_config, **model_kwargs
        )
