"""Small models built from scratch (no downloads), used by the embedded default jobs and by the tests; not shipped
with checkpoints.

- Captioners: a byte-level BPE tokenizer trained on the captions, a small vision tower (a ConvNeXt in the jobs, whose
  last feature map's cells are the prefix tokens; or a CLIP ViT) and a small GPT-2 joined by the design's projection
  MLP.
- Readers: one token per character, a small ConvNeXt that turns a text line into columns (4 px each), the MLP over
  groups of columns, a small GPT-2, and a CTC head on the columns."""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, ConvNextConfig, GPT2Config, PreTrainedTokenizerFast

from ..configuration_vitgpt2 import VitGpt2Config
from ..modeling_vitgpt2 import VitGpt2ForCaptioning
from ..processing_vitgpt2 import VitGpt2LineImageProcessor, VitGpt2Processor

EOS = "<|endoftext|>"
# ConvNeXt's default 1e-6 starts every block as the identity: slow to learn from scratch.
CONVNEXT_LAYER_SCALE = 0.1


def train_caption_tokenizer(captions: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE tokenizer learned from `captions`, with GPT-2's `<|endoftext|>` as EOS/pad."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(captions, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS)


def scratch_gpt2_config(tokenizer, width: int, layers: int, heads: int, positions: int) -> GPT2Config:
    """A small GPT-2 over `tokenizer`'s vocabulary, EOS as BOS, and no dropout: a small model learning from scratch
    needs every signal, and it learns faster without. Its MLP's GELU is GPT-2's own tanh approximation in one kernel
    (`gelu_pytorch_tanh`; "gelu_new", the GPT-2 default, runs it as eight element-wise kernels forward and more
    backward): the same function to float rounding, and the questions job's training step 1.2x faster on a CPU
    (benchmarks/bench.py --parts activation)."""
    return GPT2Config(
        vocab_size=len(tokenizer),
        activation_function="gelu_pytorch_tanh",
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        n_positions=positions,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def build_scratch_processor(tokenizer, image_size: int) -> VitGpt2Processor:
    # The PIL backend needs no torchvision; it saves as a plain CLIPImageProcessor that any install can load.
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return VitGpt2Processor(image_processor=image_processor, tokenizer=tokenizer)


def build_scratch_model(
    tokenizer,
    image_size: int = 64,
    patch_size: int = 8,
    vision_width: int = 128,
    vision_layers: int = 3,
    text_width: int = 128,
    text_layers: int = 3,
    heads: int = 4,
    max_caption_tokens: int = 64,
    vision_tower: str = "clip",
    **config_kwargs,
) -> VitGpt2ForCaptioning:
    """A randomly initialised captioner whose vocabulary is `tokenizer`'s. `vision_tower`: "clip" (a ViT cutting
    the image into `patch_size` patches) or "convnext" (a 4-px stem and stages that halve the map until one cell
    covers `patch_size` pixels: the same number of prefix tokens, each seeing its neighbours)."""
    if vision_tower not in ("clip", "convnext"):
        raise ValueError(f"vision_tower={vision_tower!r}: use 'clip' or 'convnext'")
    if vision_tower == "convnext":
        if patch_size < 4 or patch_size & (patch_size - 1):
            raise ValueError(
                f"patch_size={patch_size}: a ConvNeXt tower's cells are 4 px doubled per stage (4, 8, 16...)"
            )
        stages = patch_size.bit_length() - 2  # 4 px: the stem alone; 8 px: one more stage; 16 px: two more
        vision_config = ConvNextConfig(
            num_channels=3,
            patch_size=4,
            num_stages=stages,
            hidden_sizes=[vision_width // 2 ** (stages - 1 - stage) for stage in range(stages)],
            depths=[1] * (stages - 1) + [vision_layers],
            image_size=image_size,
            layer_scale_init_value=CONVNEXT_LAYER_SCALE,
        )
    else:
        vision_config = CLIPVisionConfig(
            hidden_size=vision_width,
            intermediate_size=4 * vision_width,
            num_hidden_layers=vision_layers,
            num_attention_heads=heads,
            image_size=image_size,
            patch_size=patch_size,
            projection_dim=vision_width,
        )
    prefix_tokens = (image_size // patch_size) ** 2 + config_kwargs.get("prefix_length", 1)
    text_config = scratch_gpt2_config(tokenizer, text_width, text_layers, heads, prefix_tokens + max_caption_tokens)
    config = VitGpt2Config(vision_config=vision_config, text_config=text_config, **config_kwargs)
    return VitGpt2ForCaptioning(config)


def build_character_tokenizer(characters: str) -> PreTrainedTokenizerFast:
    """One token per character of `characters` (anything else reads as EOS and is dropped), `<|endoftext|>` = 0."""
    vocab = {EOS: 0, **{character: index + 1 for index, character in enumerate(dict.fromkeys(characters))}}
    characters_only = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=EOS, ignore_merges=True))
    characters_only.decoder = decoders.Fuse()  # characters join as they are: spaces are tokens of their own
    return PreTrainedTokenizerFast(
        tokenizer_object=characters_only, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS
    )


def build_reader_processor(tokenizer, config: VitGpt2Config) -> VitGpt2Processor:
    """The processor for a reader of `config`: its line height, and a margin of paper past each line's last read
    column that covers the ConvNeXt's reach (a 7x7 depthwise convolution per block: 3 columns each way), so that a
    line reads the same in any batch (see VitGpt2LineImageProcessor)."""
    reach = 3 * sum(config.vision_config.depths) * config.column_width
    image_processor = VitGpt2LineImageProcessor(height=config.line_height, margin=reach + 36, frame=True)
    return VitGpt2Processor(image_processor, tokenizer=tokenizer)


def build_scratch_reader(
    tokenizer,
    line_height: int = 32,
    vision_width: int = 96,
    stem_rows: int = 8,
    blocks: int = 3,
    column_merge: int = 4,
    text_width: int = 192,
    text_layers: int = 3,
    heads: int = 3,
    max_line_width: int = 2048,
    max_text_tokens: int = 192,
    ctc_loss_weight: float = 1.0,
    ctc_decoding_weight: float = 0.8,
) -> VitGpt2ForCaptioning:
    """A randomly initialised text-line reader: ConvNeXt columns -> MLP -> GPT-2, plus a CTC head. It decodes with
    0.8 x the CTC prefix score + 0.2 x GPT-2's, the best weight on the reading job's validation lines: 4.1% CER,
    against 5.7% at 0.5 and 4.6% at 1 (the CTC head alone; GPT-2 alone, at 0, reads test lines at 84%). README,
    Reading text."""
    vision_config = ConvNextConfig(
        num_channels=1,
        patch_size=(stem_rows, 4),
        num_stages=1,
        hidden_sizes=[vision_width],
        depths=[blocks],
        image_size=line_height,
        layer_scale_init_value=CONVNEXT_LAYER_SCALE,
    )
    positions = max_line_width // (4 * column_merge) + max_text_tokens
    text_config = scratch_gpt2_config(tokenizer, text_width, text_layers, heads, positions)
    config = VitGpt2Config(
        vision_config=vision_config,
        text_config=text_config,
        vision_feature="columns",
        column_merge=column_merge,
        ctc_loss_weight=ctc_loss_weight,
        ctc_decoding_weight=ctc_decoding_weight,
        projection_hidden_size=2 * text_width,
    )
    return VitGpt2ForCaptioning(config)
