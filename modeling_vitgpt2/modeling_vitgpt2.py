"""The model: vision tower → projection MLP → image prefix tokens, then an optional text prompt, then GPT-2 writes.

GPT-2 reads [image prefix, prompt, target]: the prompt (a question, a task prompt, or nothing for a caption) is
`input_ids`; the target (caption or answer) is `labels` only, as in encoder-decoder models, so the loss covers the
target and `generate(**batch)` — what Seq2SeqTrainer calls with the whole batch — continues the prompt without ever
seeing the target.
"""

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import (
    AutoConfig,
    CLIPVisionModelWithProjection,
    ConvNextModel,
    GenerationMixin,
    GPT2LMHeadModel,
    PreTrainedModel,
    SiglipVisionModel,
    ViTModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling, CausalLMOutputWithCrossAttentions
from transformers.models.convnext.modeling_convnext import ConvNextLayer

from .configuration_vitgpt2 import VitGpt2Config
from .decoding_vitgpt2 import CTCPrefixScorer, can_decode_fast, ctc_guided_decode, greedy_decode, positions_from_mask
from .packing_vitgpt2 import additive, causal_attention, pack_tasks
from .pipeline_vitgpt2 import TASK, VitGpt2CaptioningPipeline

# Keys Seq2SeqTrainer (and users copying a training batch) pass to generate() that describe the target: never read.
_TARGET_KEYS = ("labels", "target_input_ids", "decoder_input_ids", "decoder_attention_mask")
DEFAULT_MAX_NEW_TOKENS = 32
# Attention kernels for a padded batch being trained on a GPU: all but cuDNN's, whose backward on H100/H200 (PyTorch
# >= 2.11) returns NaN gradients when a query row attends to nothing (our leading padding rows) and the length is
# 64 mod 128 (pytorch/pytorch#196678). Seen here: a reader's first GPU run went NaN before step 100.
_PADDING_SAFE_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _training_attention_kernels(mask: torch.Tensor) -> list[SDPBackend] | None:
    """The attention kernels GPT-2 may use for this training step; None: any. On CUDA, a padded batch avoids cuDNN
    (above). On a CPU under bf16 autocast, the math kernel: PyTorch's CPU flash attention computes its bf16 backward
    4x slower than float32, while the math kernel's bf16 matrix products run on the CPU's AMX units (on a Xeon: a
    reader's training step 1.06x, a captioner's 1.14x faster than with flash attention; benchmarks/RESULTS.md)."""
    if not torch.is_grad_enabled():
        return None
    if mask.is_cuda:
        return None if mask.all() else _PADDING_SAFE_ATTENTION
    return [SDPBackend.MATH] if torch.is_autocast_enabled("cpu") else None


# The tallest feature map _DepthwiseConvolution takes: measured faster up to here; its work grows with rows x rows.
_FAST_BACKWARD_MAX_ROWS = 16


class _DepthwiseConvolution(torch.autograd.Function):
    """A depthwise convolution (stride 1) whose backward pass is computed from ordinary convolutions: oneDNN's
    depthwise-convolution backward, which PyTorch calls on a CPU, costs 55-85 ms a block of the reader's ConvNeXt (32
    lines, 96 channels, a 4-row map) against 2-4 ms for the forward pass (AMD EPYC, 2 cores, float32); this, 2-3x
    less (README, Speed). The input's gradient is the forward convolution of the output's gradient with the flipped
    kernel. The kernel's gradient takes each row of the map as a channel: a grouped 1-D convolution along the width
    whose kernel for (output row r, input row s) is the 2-D kernel's row s - r + padding, so its weight gradient (one
    oneDNN call, fast) holds every row of the 2-D kernel's gradient, summed into place. The forward pass is the
    ordinary convolution; gradients differ from oneDNN's by rounding only (~1e-7 relative)."""

    @staticmethod
    def forward(ctx, features, weight, bias, padding):
        ctx.save_for_backward(features, weight)
        ctx.padding = padding
        return nn.functional.conv2d(features, weight, bias, 1, padding, 1, features.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        features, weight = ctx.saved_tensors
        batch, channels, height, width = features.shape
        kernel_rows, kernel_columns = weight.shape[-2:]
        row_padding, column_padding = ctx.padding
        grad_features = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            flipped_padding = (kernel_rows - 1 - row_padding, kernel_columns - 1 - column_padding)
            grad_features = nn.functional.conv2d(grad, weight.flip(2, 3), None, 1, flipped_padding, 1, channels)
        if ctx.needs_input_grad[1]:
            rows = torch.arange(height)
            kernel_row = rows.view(1, height) - rows.view(height, 1) + row_padding  # [output row, input row]
            used = (kernel_row >= 0) & (kernel_row < kernel_rows)
            per_row_pair = torch.ops.aten.convolution_backward(
                grad.reshape(batch, channels * height, width),
                features.reshape(batch, channels * height, width),
                features.new_zeros(channels * height, height, kernel_columns),
                None, [1], [column_padding], [1], False, [0], channels, [False, True, False],
            )[1].view(channels, height, height, kernel_columns)  # fmt: skip
            grad_weight = features.new_zeros(channels, kernel_rows, kernel_columns)
            grad_weight.index_add_(1, kernel_row[used], per_row_pair[:, used])
            grad_weight = grad_weight.unsqueeze(1)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))
        return grad_features, grad_weight, grad_bias, None


class _ConvNextDepthwiseConv2d(nn.Conv2d):
    """ConvNeXt's 7x7 depthwise convolution (same weights and state-dict keys as transformers'), trained faster on a
    CPU:
    - under CPU bf16 autocast it stays float32: oneDNN's bf16 backward of a depthwise convolution costs twice its
      float32 one, while the pointwise layers around it gain most from bf16 (on a Xeon: a reader's training step
      1.07x, a captioner's 1.17x faster; benchmarks/RESULTS.md);
    - in float32 training without autocast, its backward pass is _DepthwiseConvolution's, on maps up to
      _FAST_BACKWARD_MAX_ROWS rows. Not yet under autocast: CPUs with AMX train as they did, and its speed there is
      not measured.
    Elsewhere an ordinary Conv2d."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.device.type != "cpu":
            return super().forward(hidden_states)
        if torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(hidden_states.float())
        if (
            torch.is_grad_enabled()
            and hidden_states.dtype == torch.float32
            and hidden_states.shape[2] <= _FAST_BACKWARD_MAX_ROWS
        ):
            return _DepthwiseConvolution.apply(hidden_states, self.weight, self.bias, self.padding)
        return super().forward(hidden_states)


def build_vision_tower(vision_config) -> PreTrainedModel:
    if vision_config.model_type == "clip_vision_model":
        return CLIPVisionModelWithProjection(vision_config)
    if vision_config.model_type == "vit":
        return ViTModel(vision_config, add_pooling_layer=False)
    if vision_config.model_type == "convnext":
        tower = ConvNextModel(vision_config)
        for layer in tower.modules():
            if isinstance(layer, ConvNextLayer):
                layer.dwconv.__class__ = _ConvNextDepthwiseConv2d  # same weights and state-dict keys, another forward
        return tower
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
    if model_type == "convnext":
        return ConvNextModel.from_pretrained(name_or_path, **kwargs)
    raise ValueError(
        f"{name_or_path}: vision checkpoint of type {model_type!r} is not supported (CLIP, ViT, SigLIP, ConvNeXt)"
    )


class VitGpt2Projector(nn.Module):
    """Linear → GELU → Linear from vision features into GPT-2's embedding space (ClipCap's / LLaVA's MLP)."""

    def __init__(self, config: VitGpt2Config):
        super().__init__()
        out_features = config.text_config.n_embd * config.prefix_length
        self.linear_1 = nn.Linear(config.vision_feature_size * config.column_merge, config.projection_hidden_size)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(config.projection_hidden_size, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


@dataclass
class VitGpt2CausalLMOutput(CausalLMOutputWithCrossAttentions):
    """GPT-2's output over [image prefix, prompt, target], and `image_outputs`: the vision tower's output with the
    projected image features as `pooler_output` (None when the model was given cached vision features). A reader
    with a CTC head also returns its `ctc_logits` (batch, columns, vocabulary); `loss` then includes its loss."""

    image_outputs: BaseModelOutputWithPooling | None = None
    ctc_logits: torch.FloatTensor | None = None


class VitGpt2PreTrainedModel(PreTrainedModel):
    config_class = VitGpt2Config
    # The head model keeps GPT-2 whole (its LM head included) under `language_model`: a GPT-2 state dict loads there.
    base_model_prefix = "language_model"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPEncoderLayer", "ViTLayer", "SiglipEncoderLayer", "ConvNextLayer", "GPT2Block"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flash_attn_2 = True
    _supports_cache_class = True


class VitGpt2ForCaptioning(VitGpt2PreTrainedModel, GenerationMixin):
    """Captions an image, or answers a prompt about it: `generate(pixel_values, input_ids=prompt)` returns the new
    tokens only (no image prefix, no prompt)."""

    def __init__(self, config: VitGpt2Config):
        super().__init__(config)
        self.vision_tower = build_vision_tower(config.vision_config)
        self.projector = VitGpt2Projector(config)
        # A reader's CTC head: one column of the line -> a character or blank (EOS, which never occurs inside text).
        self.ctc_head = (
            nn.Linear(config.vision_feature_size, config.text_config.vocab_size) if config.ctc_loss_weight else None
        )
        self.language_model = GPT2LMHeadModel(config.text_config)
        # With isolated image tokens: the token after them, which reads them all (configuration_vitgpt2.py).
        self.image_summary_token = (
            nn.Parameter(torch.empty(1, 1, config.text_config.n_embd)) if config.isolate_image_tokens else None
        )
        self.language_model.loss_type = "ForCausalLM"  # its class name does not tell transformers 5 which loss
        self.post_init()
        if self.generation_config.max_new_tokens is None:
            self.generation_config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self and self.image_summary_token is not None:
            # torch's init, not transformers.initialization: the shipped code also loads on transformers 4.57
            nn.init.normal_(self.image_summary_token, std=self.config.text_config.initializer_range)

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

    def set_output_embeddings(self, new_embeddings):
        self.language_model.set_output_embeddings(new_embeddings)

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """GPT-2 resizes (and re-ties, or not, as its config says) its own embeddings and LM head; the vocabulary
        size is then recorded in both configs, so the model saves and reloads at its new size."""
        embeddings = self.language_model.resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        self.config.text_config.vocab_size = self.language_model.config.vocab_size
        self.vocab_size = self.language_model.config.vocab_size
        return embeddings

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
        pixel_values = pixel_values.to(device=self.device, dtype=self.vision_tower.dtype)
        output = self.vision_tower(pixel_values, output_hidden_states=self.config.vision_feature == "patch")
        return self._select_features(output)

    def _select_features(self, output) -> torch.Tensor:
        config, model_type = self.config, self.config.vision_config.model_type
        if config.vision_feature == "columns":
            feature_map = output.last_hidden_state  # (batch, channels, rows, columns)
            return feature_map.permute(0, 3, 1, 2).flatten(2)  # (batch, columns, channels x rows)
        if config.vision_feature == "patch":
            patches = output.hidden_states[config.vision_feature_layer]
            if model_type == "convnext":  # a feature map (batch, channels, rows, columns): its cells, row by row
                return patches.flatten(2).transpose(1, 2)
            return patches if model_type == "siglip_vision_model" else patches[:, 1:]  # drop [CLS]
        if model_type == "clip_vision_model":
            return output.image_embeds
        if model_type == "vit":
            return output.last_hidden_state[:, 0]
        return output.pooler_output

    def get_image_prefix(self, pixel_values=None, vision_features=None) -> torch.Tensor:
        """Prefix embeddings (batch, prefix tokens, GPT-2 width) from pixels or from precomputed vision features; with
        isolated image tokens, the summary token comes last."""
        if vision_features is None:
            if pixel_values is None:
                raise ValueError("pass pixel_values (images) or vision_features (cached vision tower output)")
            vision_features = self.get_vision_features(pixel_values)
        vision_features = vision_features.to(device=self.device, dtype=self.projector.linear_1.weight.dtype)
        merge = self.config.column_merge
        if merge > 1:
            batch_size, columns, width = vision_features.shape
            if columns % merge:
                raise ValueError(f"{columns} columns do not split into groups of column_merge={merge}: pad the line "
                                 "image to a multiple of the processor's width_multiple")  # fmt: skip
            vision_features = vision_features.reshape(batch_size, columns // merge, merge * width)
        prefix = self.projector(vision_features)
        batch_size = prefix.shape[0]
        prefix = prefix.view(batch_size, -1, self.config.text_config.n_embd)
        if self.image_summary_token is not None:
            summary = self.image_summary_token.to(prefix.dtype).expand(batch_size, 1, -1)
            prefix = torch.cat([prefix, summary], dim=1)
        return prefix.to(self.language_model.dtype)

    def isolated_tokens(self, prefix: torch.Tensor) -> int:
        """How many of the prefix's tokens attend to themselves only inside GPT-2: the image's, when the config
        isolates them (all but the summary token); else 0."""
        return prefix.shape[1] - 1 if self.image_summary_token is not None else 0

    @contextlib.contextmanager
    def _isolating_image_tokens(self, isolated_tokens: int):
        """While transformers' generation loop runs (beams, sampling, ...): it gives GPT-2 a 2-D padding mask, which a
        pre-hook turns into the 4-D mask that isolates the image's tokens in every call reading more than one new
        token (the prefill). A call that reads one token needs none: that token attends to all before it."""
        if not isolated_tokens:
            yield
            return

        def isolate(module, args, kwargs):
            new = kwargs.get("inputs_embeds")
            if new is None:
                new = args[0] if args else kwargs.get("input_ids")
            mask = kwargs.get("attention_mask")
            if new is None or new.shape[1] < 2 or (mask is not None and mask.ndim != 2):
                return None
            if mask is None:  # transformers drops a mask of ones
                cache = kwargs.get("cache", kwargs.get("past_key_values"))
                seen = cache.get_seq_length() if cache is not None else 0
                mask = torch.ones(new.shape[0], seen + new.shape[1], dtype=torch.long, device=new.device)
            kwargs["attention_mask"] = additive(
                causal_attention(mask, new.shape[1], isolated_tokens), self.language_model.dtype
            )
            return args, kwargs

        handle = self.language_model.transformer.register_forward_pre_hook(isolate, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def get_image_features(
        self, pixel_values: torch.Tensor, output_hidden_states=None, output_attentions=None, return_dict=None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """As transformers 5's VLMs: the vision tower's output, with `pooler_output` set to the projected image
        features GPT-2 reads, (batch, prefix tokens, GPT-2 width). Hidden states and attentions are returned when
        asked for (arguments, or the vision config's `output_hidden_states` / `output_attentions`)."""
        vision_config = self.config.vision_config
        if output_hidden_states is None:
            output_hidden_states = getattr(vision_config, "output_hidden_states", False)
        if output_attentions is None:
            output_attentions = getattr(vision_config, "output_attentions", False)
        pixel_values = pixel_values.to(device=self.device, dtype=self.vision_tower.dtype)
        # Asked for only when wanted: transformers 4's ConvNeXt (no attention) refuses the argument.
        attentions = {"output_attentions": True} if output_attentions else {}
        output = self.vision_tower(
            pixel_values,
            output_hidden_states=output_hidden_states or self.config.vision_feature == "patch",
            return_dict=True,
            **attentions,
        )
        prefix = self.get_image_prefix(vision_features=self._select_features(output))
        features = BaseModelOutputWithPooling(
            last_hidden_state=output.last_hidden_state,
            pooler_output=prefix,
            hidden_states=output.hidden_states if output_hidden_states else None,
            attentions=output.attentions if output_attentions else None,
        )
        return self._as_requested(features, return_dict)

    def prefix_mask(self, pixel_mask: torch.Tensor | None, prefix: torch.Tensor) -> torch.Tensor | None:
        """Which prefix tokens belong to the line (1) rather than to the batch's padding (0), from the processor's
        `pixel_mask` (batch, pixel columns) of line images padded to a common width; None: every token is real."""
        if pixel_mask is None or self.config.vision_feature != "columns":
            return None
        return self.column_mask(pixel_mask, prefix.shape[1]).long()

    def column_mask(self, pixel_mask: torch.Tensor, columns: int) -> torch.Tensor:
        """Which of `columns` equal groups of pixel columns (feature-map columns, or prefix tokens) lie wholly within
        each line, from the processor's pixel-column mask."""
        pixel_mask = pixel_mask.to(self.device).bool()
        return pixel_mask.view(pixel_mask.shape[0], columns, -1).all(-1)

    def get_ctc_logits(self, image_outputs) -> torch.Tensor:
        """A reader's CTC head over the columns of `get_image_features`'s output: (batch, columns, vocabulary)."""
        return self.ctc_head(self._select_features(image_outputs))

    def _with_prompt(self, prefix, input_ids=None, attention_mask=None, inputs_embeds=None, prefix_mask=None):
        """[image prefix, prompt] embeddings and their attention mask, padding moved in front of the image."""
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("pass the prompt as input_ids or as inputs_embeds, not both")
        mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        if prefix_mask is not None:
            mask = prefix_mask.to(device=prefix.device, dtype=mask.dtype)
        if inputs_embeds is None and input_ids is not None:
            inputs_embeds = self.get_input_embeddings()(input_ids.to(prefix.device))
        if inputs_embeds is None or inputs_embeds.shape[1] == 0:
            return self._padding_first(prefix, mask)
        if inputs_embeds.shape[0] != prefix.shape[0]:
            raise ValueError(
                f"{inputs_embeds.shape[0]} prompts for {prefix.shape[0]} images: give one prompt per image"
            )
        room = self.config.text_config.n_positions - prefix.shape[1]
        prompt_length = inputs_embeds.shape[1] if attention_mask is None else int(attention_mask.sum(-1).max())
        if prompt_length >= room:
            raise ValueError(
                f"prompt of {prompt_length} tokens is too long: GPT-2 has {self.config.text_config.n_positions} "
                f"positions, the image takes {prefix.shape[1]}, so a prompt may have at most {room - 1} tokens "
                "(leaving one for the answer)"
            )
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=prefix.device)
        embeds = torch.cat([prefix, inputs_embeds.to(device=prefix.device, dtype=prefix.dtype)], dim=1)
        mask = torch.cat([mask, attention_mask.to(device=prefix.device, dtype=mask.dtype)], dim=1)
        return self._padding_first(embeds, mask)

    @staticmethod
    def _padding_first(embeds, mask):
        """Padding goes first, before the image: the last position must be a real token (the prompt's end, or the
        image's for an empty prompt), since it predicts the first new one. Right-padded prompts and the padding
        columns of short lines batched with long ones move there too; the order of real tokens is kept."""
        if mask.all():
            return embeds, mask
        order = torch.argsort(mask, dim=1, stable=True)
        return embeds.gather(1, order[..., None].expand_as(embeds)), mask.gather(1, order)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        target_input_ids: torch.LongTensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> VitGpt2CausalLMOutput:
        """Logits over [image prefix, prompt, target].

        Args:
            input_ids / inputs_embeds, attention_mask: the prompt (left-padded in a batch); none for captioning.
            labels: the target (caption or answer, EOS included), -100 after its end. The loss covers these only.
                Training may give several tasks per image as 3-D input_ids / attention_mask / labels (images x tasks x
                tokens): they are packed into one sequence per image (packing_vitgpt2.py), and the logits are over
                that sequence.
            target_input_ids: what GPT-2 reads in the target's place while training (e.g. with some tokens replaced
                by noise); by default the target itself.
            position_ids: over the whole sequence; by default counted over the attention mask, skipping padding.
            pixel_mask: for text lines batched at one width, the pixel columns of each line (the processor's).
        """
        if kwargs.get("past_key_values") is not None or kwargs.get("cache") is not None:
            raise ValueError("forward() reads the image every call and takes no cache; generate() keeps one itself")
        image_outputs = ctc_logits = None
        if vision_features is None:
            if pixel_values is None:
                raise ValueError("pass pixel_values (images) or vision_features (cached vision tower output)")
            image_outputs = self.get_image_features(pixel_values, return_dict=True)
            prefix = image_outputs.pooler_output
            if self.ctc_head is not None:
                ctc_logits = self.get_ctc_logits(image_outputs)
        else:
            prefix = self.get_image_prefix(vision_features=vision_features)
        prefix_mask = self.prefix_mask(pixel_mask, prefix)
        if (labels is not None and labels.dim() == 3) or (input_ids is not None and input_ids.dim() == 3):
            if position_ids is not None or inputs_embeds is not None or ctc_logits is not None:
                raise ValueError(
                    "several tasks per image (3-D input_ids/labels) take input_ids, not inputs_embeds or "
                    "position_ids, and are for captioners (a reader trains one line per image)"
                )
            embeds, attention, position_ids, labels, mask = self._packed_tasks(
                prefix, prefix_mask, input_ids, attention_mask, labels, target_input_ids
            )
        else:
            embeds, mask, labels = self._prompt_and_target(
                prefix, prefix_mask, input_ids, attention_mask, inputs_embeds, labels, target_input_ids
            )
            isolated_tokens = self.isolated_tokens(prefix)
            attention = mask
            if isolated_tokens:
                attention = additive(causal_attention(mask, isolated_tokens=isolated_tokens), embeds.dtype)
        if position_ids is None:
            position_ids = positions_from_mask(mask)
        kernels = _training_attention_kernels(mask)
        with sdpa_kernel(kernels) if kernels else contextlib.nullcontext():
            output = self.language_model(
                inputs_embeds=embeds, attention_mask=attention, position_ids=position_ids, labels=labels,
                return_dict=True, **kwargs,
            )  # fmt: skip
        output = VitGpt2CausalLMOutput(**output, image_outputs=image_outputs, ctc_logits=ctc_logits)
        if ctc_logits is not None and output.loss is not None:
            column_mask = None if pixel_mask is None else self.column_mask(pixel_mask, ctc_logits.shape[1])
            ctc_loss = self._ctc_loss(ctc_logits, labels, column_mask)  # the prefix and prompt are -100 there
            output.loss = output.loss + self.config.ctc_loss_weight * ctc_loss
        return self._as_requested(output, return_dict)

    def _prompt_and_target(
        self, prefix, prefix_mask, input_ids, attention_mask, inputs_embeds, labels, target_input_ids
    ):
        """[image prefix, prompt, target] embeddings, their attention mask and labels (-100 outside the target)."""
        embeds, mask = self._with_prompt(prefix, input_ids, attention_mask, inputs_embeds, prefix_mask)
        if labels is not None:
            labels = labels.to(prefix.device)
            in_target = labels != -100
            if target_input_ids is None:
                target_input_ids = labels.masked_fill(~in_target, self.config.pad_token_id)
            target = self.get_input_embeddings()(target_input_ids.to(prefix.device))
            ignore = torch.full(embeds.shape[:2], -100, dtype=labels.dtype, device=labels.device)
            embeds = torch.cat([embeds, target], dim=1)
            mask = torch.cat([mask, in_target.to(mask.dtype)], dim=1)
            labels = torch.cat([ignore, labels], dim=1)
        return embeds, mask, labels

    def _packed_tasks(self, prefix, prefix_mask, input_ids, attention_mask, labels, target_input_ids):
        """An image's tasks (images x tasks x tokens) in one sequence after its prefix (packing_vitgpt2.py)."""
        if labels is None or labels.dim() != 3 or (input_ids is not None and input_ids.dim() != 3):
            raise ValueError("several tasks per image are for training: give labels and input_ids (if any) as "
                             "images x tasks x tokens")  # fmt: skip
        labels = labels.to(prefix.device)
        if target_input_ids is None:
            target_input_ids = labels.masked_fill(labels == -100, self.config.pad_token_id)
        embeds, attention, position_ids, labels, mask = pack_tasks(
            prefix, prefix_mask, self.get_input_embeddings(), input_ids, attention_mask, labels, target_input_ids,
            self.isolated_tokens(prefix),
        )  # fmt: skip
        positions = self.config.text_config.n_positions
        if position_ids.max() >= positions:
            raise ValueError(f"a task (prompt and target) too long: with the image it needs more than GPT-2's "
                             f"{positions} positions")  # fmt: skip
        return embeds, attention, position_ids, labels, mask

    def _ctc_loss(self, ctc_logits, labels, column_mask=None):
        """CTC between the columns and the target's characters (EOS, the blank, and -100 left out)."""
        blank = self.config.eos_token_id
        in_target = (labels != -100) & (labels != blank)
        log_probs = ctc_logits.float().log_softmax(-1).transpose(0, 1)  # (columns, batch, vocabulary)
        columns = torch.full((labels.shape[0],), log_probs.shape[0], dtype=torch.long, device=labels.device)
        if column_mask is not None:
            columns = column_mask.sum(-1).to(labels.device)
        return nn.functional.ctc_loss(
            log_probs, labels[in_target], columns, in_target.sum(-1), blank=blank, zero_infinity=True
        )

    def _as_requested(self, output, return_dict: bool | None):
        """The output object, or its tuple when `return_dict` (else the config's) says so."""
        return output if (return_dict if return_dict is not None else self.config.return_dict) else output.to_tuple()

    @torch.no_grad()
    def generate(
        self,
        pixel_values=None,
        input_ids=None,
        attention_mask=None,
        inputs_embeds=None,
        vision_features=None,
        generation_config=None,
        pixel_mask=None,
        ctc_weight=None,
        **kwargs,
    ):
        """New token ids after [image, prompt]: a caption without a prompt, the answer with one. Greedy, beam search or
        sampling, as `generation_config`/kwargs say; batches of prompts are left-padded (the processor does so).

        The target a training batch carries (`labels`, as Seq2SeqTrainer passes) is never read. `max_length`, like
        `max_new_tokens`, counts new tokens only. Plain greedy decoding runs on preallocated keys/values and, on a
        GPU, replays CUDA graphs (`decoding_vitgpt2.py`); the tokens are the same as transformers' loop, which
        `cache_implementation="dynamic"` asks for and every other setting gets.

        A reader (a model with a CTC head) decodes greedily with the CTC head's prefix score mixed in, with weight
        `ctc_weight` (default: the config's `ctc_decoding_weight`; 0 turns it off), and stops a text that starts
        repeating itself (decoding_vitgpt2.ctc_guided_decode).
        """
        for key in _TARGET_KEYS:
            kwargs.pop(key, None)
        for key in ("past_key_values", "cache"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"generate() got {key}: vitgpt2 starts every call from the image (and prompt) and keeps its own "
                    "cache; pass pixel_values and the prompt's input_ids instead"
                )
        if pixel_values is None and vision_features is None:
            raise ValueError("generate() needs the image: pass pixel_values (or vision_features), and input_ids or "
                             "inputs_embeds for a prompt")  # fmt: skip
        if "max_length" in kwargs and "max_new_tokens" not in kwargs:
            # As for encoder-decoder captioners, max_length counts generated tokens: the image and prompt are input.
            kwargs["max_new_tokens"] = kwargs.pop("max_length")
        budget_given = generation_config is not None or "max_new_tokens" in kwargs
        generation_config = copy.deepcopy(
            generation_config if generation_config is not None else self.generation_config
        )
        model_kwargs = generation_config.update(**kwargs)  # returns the kwargs that are not generation settings
        ctc_weight = self.config.ctc_decoding_weight if ctc_weight is None else ctc_weight
        # A reader decodes greedily in its own loop: the CTC prefix score (unless ctc_weight=0) and the repetition
        # guard. Beams and sampling go to transformers' loop, without either.
        guided = (
            self.ctc_head is not None and vision_features is None
            and (generation_config.num_beams or 1) == 1 and not generation_config.do_sample
        )  # fmt: skip
        if guided:
            image_outputs = self.get_image_features(pixel_values, return_dict=True)
            prefix = image_outputs.pooler_output
            ctc_logits = self.get_ctc_logits(image_outputs)
        else:
            prefix = self.get_image_prefix(pixel_values, vision_features)
        embeds, mask = self._with_prompt(
            prefix, input_ids, attention_mask, inputs_embeds, self.prefix_mask(pixel_mask, prefix)
        )
        room = self.config.text_config.n_positions - embeds.shape[1]
        if generation_config.max_new_tokens is None or generation_config.max_new_tokens > room:
            generation_config.max_new_tokens = room  # GPT-2 has no positions beyond; the text ends there
        generation_config.max_length = None  # max_new_tokens wins anyway; this avoids a spurious clash warning
        if guided:
            column_mask = None if pixel_mask is None else self.column_mask(pixel_mask, ctc_logits.shape[1])
            scorer = None  # ctc_weight=0: GPT-2 alone, in the same loop (the width budget and repetition guard stay)
            if ctc_weight:
                scorer = CTCPrefixScorer(ctc_logits.log_softmax(-1), column_mask, blank=self.config.eos_token_id)
            pad = generation_config.pad_token_id
            # A line holds at most one character per column: unless told otherwise, its width sets the budget.
            columns = ctc_logits.shape[1] if column_mask is None else int(column_mask.sum(-1).max())
            if not budget_given:
                generation_config.max_new_tokens = min(room, columns + 1)
            return ctc_guided_decode(
                self.language_model, embeds, mask, scorer, generation_config.max_new_tokens,
                eos=self.config.eos_token_id, pad=self.config.eos_token_id if pad is None else pad,
                ctc_weight=ctc_weight if scorer is not None else 0.0,
            )  # fmt: skip
        # Seq2SeqTrainer always passes synced_gpus; only True (ranks step together, ZeRO-3) needs transformers' loop.
        if not model_kwargs.get("synced_gpus"):
            model_kwargs.pop("synced_gpus", None)
            if can_decode_fast(self.language_model, generation_config, model_kwargs, embeds.shape[1]):
                return greedy_decode(self.language_model, embeds, mask, generation_config, self.isolated_tokens(prefix))
        with self._isolating_image_tokens(self.isolated_tokens(prefix)):
            return self.language_model.generate(
                inputs_embeds=embeds, attention_mask=mask, generation_config=generation_config, **model_kwargs
            )
