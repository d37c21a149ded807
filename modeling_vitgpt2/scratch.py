"""Small captioners built from scratch (no downloads): a byte-level BPE tokenizer trained on the captions, a small
CLIP vision tower and a small GPT-2 joined by the design's projection MLP. Used by the embedded default main job
and by the tests; not shipped with checkpoints."""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, GPT2Config, PreTrainedTokenizerFast

from .configuration_vitgpt2 import VitGpt2Config
from .modeling_vitgpt2 import VitGpt2ForCaptioning
from .processing_vitgpt2 import VitGpt2Processor

EOS = "<|endoftext|>"


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
    **config_kwargs,
) -> VitGpt2ForCaptioning:
    """A randomly initialised captioner whose vocabulary is `tokenizer`'s."""
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
    text_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=text_width,
        n_layer=text_layers,
        n_head=heads,
        n_positions=prefix_tokens + max_caption_tokens,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # No dropout: a small model learning from scratch needs every signal, and it learns faster without.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    config = VitGpt2Config(vision_config=vision_config, text_config=text_config, **config_kwargs)
    return VitGpt2ForCaptioning(config)
