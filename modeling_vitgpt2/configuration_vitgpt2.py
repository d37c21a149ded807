"""Configuration of the ViT → projection → GPT-2 captioner."""

from transformers import AutoConfig, CLIPVisionConfig, GPT2Config, PretrainedConfig

# Vision towers we know how to read a feature from: CLIP (pooled = the 512-d projected image embedding),
# ViT (pooled = the final [CLS] state), SigLIP (pooled = its attention-pooling head) and ConvNeXt (pooled = its
# normalised average; columns = a text line's feature map read column by column).
SUPPORTED_VISION_MODEL_TYPES = ("clip_vision_model", "vit", "siglip_vision_model", "convnext")
VISION_FEATURES = ("pooled", "patch", "columns")


def _as_config(value, default_cls, vision: bool):
    if value is None:
        return default_cls()
    if isinstance(value, PretrainedConfig):
        config = value
    else:
        value = dict(value)
        config = AutoConfig.for_model(value.pop("model_type", default_cls.model_type), **value)
    # A full CLIP or SigLIP config carries a text tower we do not want: keep its vision half.
    if vision and getattr(config, "vision_config", None) is not None:
        config = config.vision_config
    return config


class VitGpt2Config(PretrainedConfig):
    r"""
    Args:
        vision_config: CLIP vision (default), ViT or SigLIP vision config, or its dict.
        text_config: GPT-2 config, or its dict.
        vision_feature: `"pooled"` — one image embedding (CLIP: the 512-d projected embedding) mapped by the MLP to
            `prefix_length` prefix tokens, as ClipCap does; `"patch"` — every patch token of `vision_feature_layer`
            mapped by the MLP to one prefix token each, as LLaVA does; `"columns"` (ConvNeXt) — a text line's
            feature map cut into columns (every row of one column is one feature vector), left to right, for reading.
        column_merge: with `"columns"`, this many neighbouring columns make one prefix token (fewer tokens for GPT-2
            to attend over; the CTC head still reads every column).
        ctc_loss_weight: with `"columns"`, weight of a CTC loss on a linear head over the columns (0: no head). The
            head learns to read long before GPT-2 learns where to look.
        ctc_decoding_weight: with a CTC head, greedy `generate` scores each next token by (1 - w) x GPT-2's
            log-probability + w x the CTC prefix score (hybrid CTC/attention decoding); 0 decodes with GPT-2 alone.
        vision_feature_layer: hidden layer whose patch tokens are used when `vision_feature="patch"`.
        prefix_length: number of prefix tokens the pooled embedding is split into (pooled features only).
        projection_hidden_size: width of the MLP's hidden layer; default twice GPT-2's width (1536 for GPT-2 small).
        isolate_image_tokens: inside GPT-2 each image prefix token attends to itself only, and one more, learned
            token after them (which attends to them all) is where the text starts reading: with causal attention
            among them a token takes in the objects of the cells before it, and lookups by shape ("what colour is the
            cross?") then also find the cross in a later diamond's token. The built-in questions job turns it on
            (README, Questions). Not for readers (`"columns"`).
    """

    model_type = "vitgpt2"
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        vision_feature: str = "pooled",
        vision_feature_layer: int = -2,
        prefix_length: int = 1,
        projection_hidden_size: int | None = None,
        column_merge: int = 1,
        ctc_loss_weight: float = 0.0,
        ctc_decoding_weight: float = 0.5,
        isolate_image_tokens: bool = False,
        **kwargs,
    ):
        self.vision_config = _as_config(vision_config, CLIPVisionConfig, vision=True)
        self.text_config = _as_config(text_config, GPT2Config, vision=False)
        if self.vision_config.model_type not in SUPPORTED_VISION_MODEL_TYPES:
            raise ValueError(
                f"vision_config.model_type={self.vision_config.model_type!r} is not supported; "
                f"use one of {SUPPORTED_VISION_MODEL_TYPES}"
            )
        if self.text_config.model_type != "gpt2":
            raise ValueError(f"text_config.model_type={self.text_config.model_type!r} is not supported; use 'gpt2'")
        if vision_feature not in VISION_FEATURES:
            raise ValueError(f"vision_feature={vision_feature!r}; use one of {VISION_FEATURES}")
        if prefix_length < 1 or (vision_feature == "patch" and prefix_length != 1):
            raise ValueError(
                f"prefix_length={prefix_length}: must be >= 1, and 1 with patch features (one token per patch)"
            )
        if vision_feature == "columns" and self.vision_config.model_type != "convnext":
            raise ValueError("vision_feature='columns' reads a ConvNeXt feature map; use a convnext vision_config")
        if (column_merge != 1 or ctc_loss_weight) and vision_feature != "columns":
            raise ValueError("column_merge and ctc_loss_weight apply to vision_feature='columns' only")
        if isolate_image_tokens and vision_feature == "columns":
            raise ValueError("isolate_image_tokens is for captioners: a reader's columns read a line together")
        self.isolate_image_tokens = isolate_image_tokens
        self.column_merge = column_merge
        self.ctc_loss_weight = ctc_loss_weight
        self.ctc_decoding_weight = ctc_decoding_weight
        self.vision_feature = vision_feature
        self.vision_feature_layer = vision_feature_layer
        self.prefix_length = prefix_length
        self.projection_hidden_size = projection_hidden_size or 2 * self.text_config.n_embd
        # GPT-2 has no pad token; the processor pads with EOS, and Seq2SeqTrainer pads predictions with this.
        kwargs.setdefault("pad_token_id", self.text_config.eos_token_id)
        kwargs.setdefault("eos_token_id", self.text_config.eos_token_id)
        kwargs.setdefault("bos_token_id", self.text_config.bos_token_id)
        kwargs.setdefault("tie_word_embeddings", self.text_config.tie_word_embeddings)
        super().__init__(**kwargs)

    @property
    def vision_feature_size(self) -> int:
        """Width of one vision feature vector fed to the projection MLP."""
        vision_config = self.vision_config
        if self.vision_feature == "pooled" and vision_config.model_type == "clip_vision_model":
            return vision_config.projection_dim
        if vision_config.model_type == "convnext":
            if self.vision_feature in ("pooled", "patch"):
                return vision_config.hidden_sizes[-1]
            return vision_config.hidden_sizes[-1] * (self.line_height // self._stride(0))
        return vision_config.hidden_size

    def _stride(self, axis: int) -> int:
        """Pixels per feature-map cell along `axis` (0 rows, 1 columns): the stem's patch, doubled per later stage."""
        patch = self.vision_config.patch_size
        patch = patch if isinstance(patch, int) else patch[axis]
        return patch * 2 ** (self.vision_config.num_stages - 1)

    @property
    def column_width(self) -> int:
        """Pixels of the line image per column of the ConvNeXt feature map."""
        return self._stride(1)

    @property
    def line_height(self) -> int:
        """Pixel height of a text line as the reader sees it (the ConvNeXt config's image_size)."""
        size = self.vision_config.image_size
        return size if isinstance(size, int) else size[0]
