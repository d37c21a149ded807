"""Processor: image processor (pixels) + GPT-2 tokenizer (prompts and targets), and robust image loading."""

import io
import json
import os
import urllib.error
import urllib.request

import numpy as np
import transformers
from PIL import Image, UnidentifiedImageError
from transformers import AutoImageProcessor, AutoTokenizer, BatchFeature, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor

from .segmentation_vitgpt2 import frame_line, line_images, straighten_line


class ImageLoadError(ValueError):
    """An input that cannot be turned into an RGB image; the message names the input."""


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__}>"


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB for every mode PIL decodes: alpha composited onto white, 16-bit and float scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8))  # 2-D uint8: "L"
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _download(url: str, name: str, timeout: float = 30.0) -> bytes:
    """The bytes at `url`; a failed request raises ImageLoadError with its HTTP status or network error."""
    request = urllib.request.Request(url, headers={"User-Agent": "vitgpt2"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read()
    except urllib.error.HTTPError as error:
        raise ImageLoadError(f"{name}: could not download (HTTP {error.code} {error.reason})") from error
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise ImageLoadError(f"{name}: could not download ({type(error).__name__}: {reason})") from error
    if not data:
        raise ImageLoadError(f"{name}: the server sent an empty response")
    return data


def load_image(source, max_side: int = 2048) -> Image.Image:
    """An RGB PIL image from a PIL image, numpy array, encoded bytes, local path, http(s) URL, or a `datasets`
    undecoded image (`{"bytes": ..., "path": ...}`).

    Raises ImageLoadError naming `source` for missing, empty, non-image, truncated or oversized inputs. Very large
    images are shrunk to `max_side` on load (JPEGs decode at reduced size directly) — the model sees 224 px anyway.
    """
    if isinstance(source, dict):  # datasets.Image(decode=False): bytes when embedded, else a path
        source = source.get("bytes") or source.get("path")
    name = _describe(source)
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, (bytes, bytearray)):
            if not source:
                raise ImageLoadError(f"{name}: empty (0 bytes)")
            image = Image.open(io.BytesIO(source))
        elif isinstance(source, np.ndarray):
            image = Image.fromarray(source)
        elif isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if path.startswith(("http://", "https://")):
                image = Image.open(io.BytesIO(_download(path, name)))
            elif not os.path.isfile(path):
                raise ImageLoadError(f"{name}: no such file")
            elif os.path.getsize(path) == 0:
                raise ImageLoadError(f"{name}: empty file (0 bytes)")
            else:
                image = Image.open(path)
        else:
            raise ImageLoadError(f"{name}: expected a PIL image, numpy array, bytes, path or URL")
        image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale instead of full size
        image.load()
        if max(image.size) > max_side:
            image.thumbnail((max_side, max_side))
        return _to_rgb(image)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as error:
        raise ImageLoadError(f"{name}: not an image file PIL can read") from error
    except Image.DecompressionBombError as error:
        raise ImageLoadError(f"{name}: too many pixels to decode safely ({error})") from error
    except (OSError, SyntaxError, ValueError, TypeError) as error:
        raise ImageLoadError(f"{name}: truncated or corrupt image ({error})") from error


class VitGpt2LineImageProcessor(BaseImageProcessor):
    """Text lines for a reader: grey, straightened (`deskew`: a line skewed by up to 3 degrees is turned level and
    cut to its text, as the page segmenter does) and, with `frame`, framed by its own x-height
    (segmentation_vitgpt2.frame_line: letters at one size and place whatever the font or the crop), `height` px tall
    with the aspect ratio kept (a line wider than `max_width` is narrowed to fit), right-padded with the line's own
    background, normalised to [-1, 1]. (`frame` is off by default so that readers saved before it read as trained.)

    A batch has one width; `pixel_mask` (batch, width) marks each line's columns, up to 16 px past its text (a
    multiple of 16). Every line gets at least `margin` px of background after that, which must cover the vision
    tower's reach (ConvNeXt: 4 px per column x 3 columns per block x blocks, both sides), so a line reads the same
    in any batch as alone.
    """

    model_input_names = ["pixel_values", "pixel_mask"]

    def __init__(
        self, height=32, max_width=2048, margin=72, width_multiple=32, deskew: bool = True, frame: bool = False,
        **kwargs,
    ):  # fmt: skip
        super().__init__(**kwargs)
        self.height, self.max_width, self.margin, self.width_multiple = height, max_width, margin, width_multiple
        self.deskew, self.frame = deskew, frame

    def preprocess(self, images, return_tensors="pt", **kwargs) -> BatchFeature:
        images = images if isinstance(images, (list, tuple)) else [images]
        return self.pad_lines([self.prepare_line(image) for image in images], return_tensors)

    def prepare_line(self, image) -> np.ndarray:
        """One image -> its line, grey, straightened or framed and scaled to `height` px: uint8, height x width.
        The per-line work of `preprocess`, which a training run can do once per line (train.py) instead of once
        per epoch."""
        image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        if self.frame:
            image = frame_line(image)
        else:
            image = straighten_line(image) if self.deskew else image.convert("L")
        width = max(1, min(round(image.width * self.height / image.height), self.max_width - self.margin))
        return np.asarray(image.resize((width, self.height), Image.BILINEAR, reducing_gap=2.0), np.uint8)

    def pad_lines(self, lines: list[np.ndarray], return_tensors="pt") -> BatchFeature:
        """Prepared lines -> one batch: each right-padded with its own background (the median of its border) to
        the widest line's padded width, `pixel_mask` marking its columns up to 16 px past its text."""
        widest = max(line.shape[1] for line in lines)
        width = -(-(widest + self.margin) // self.width_multiple) * self.width_multiple
        pixels = np.empty((len(lines), 1, self.height, width), np.float32)
        mask = np.zeros((len(lines), width), np.int64)
        for index, line in enumerate(lines):
            border = np.concatenate([line[0], line[-1], line[:, 0], line[:, -1]]).astype(np.float32)
            pixels[index] = float(np.median(border))
            pixels[index, 0, :, : line.shape[1]] = line
            mask[index, : -(-(line.shape[1] + 16) // 16) * 16] = 1
        pixels = (pixels / 255.0 - 0.5) / 0.5
        return BatchFeature({"pixel_values": pixels, "pixel_mask": mask}, tensor_type=return_tensors)


class VitGpt2Processor(ProcessorMixin):
    """`processor(images=..., text=prompt, text_target=caption)` → model inputs.

    - `images` → `pixel_values`.
    - `text` → the prompt, `input_ids` + `attention_mask`: a question or a task prompt, or none (or "") to caption.
      A batch of prompts is padded on the left, so that every answer starts right after its prompt.
    - `text_target` → `labels`: the caption or answer, ending with EOS so the model learns where to stop; padded
      positions are -100 and never learned. The model reads the target after the prompt while training; `generate`
      never reads it.
    """

    if int(transformers.__version__.split(".")[0]) < 5:  # 4.x finds sub-processors through these (5.x: __init__)
        attributes = ["image_processor", "tokenizer"]
        image_processor_class = "AutoImageProcessor"
        tokenizer_class = "AutoTokenizer"

    load_image = staticmethod(load_image)  # for callers that only have the processor (the Endpoints handler)

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # prompts; targets are padded on the right by tokenize_targets
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_vision_text_pretrained(cls, vision_model_name_or_path, text_model_name_or_path, **kwargs):
        """The image processor of the vision checkpoint + the tokenizer of the GPT-2 checkpoint."""
        image_processor = AutoImageProcessor.from_pretrained(vision_model_name_or_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(text_model_name_or_path, **kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer)

    def __call__(
        self, images=None, text=None, text_target=None, max_length: int | None = None, return_tensors="pt", **kwargs
    ):
        if images is None and text is None and text_target is None:
            raise ValueError("pass images=..., text=... (a prompt), text_target=... (a caption or answer), or several")
        data = {}
        if images is not None:
            images = [load_image(image) for image in (images if isinstance(images, (list, tuple)) else [images])]
            pixels = self.image_processor(
                images, return_tensors=return_tensors, input_data_format="channels_last", **kwargs
            )
            data.update(pixels)  # pixel_values, and a reader's pixel_mask
        if text is not None:
            data.update(self.tokenize_prompts(text, return_tensors=return_tensors))
        if text_target is not None:
            data.update(self.tokenize_targets(text_target, max_length=max_length, return_tensors=return_tensors))
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def reads_lines(self) -> bool:
        """Whether this is a reader's processor (text lines in, their text out)."""
        return isinstance(self.image_processor, VitGpt2LineImageProcessor)

    def split_page(self, image) -> list[Image.Image]:
        """A reader's input as its text lines, top to bottom: a page (two or more lines found) is cut into lines by
        the projection-profile segmenter (segmentation_vitgpt2.py); an image with one line is kept whole; an image
        with no ink at all has no lines."""
        image = load_image(image)
        lines = line_images(image)
        return lines if len(lines) > 1 else [image] if lines else []

    def tokenize_prompts(self, text, return_tensors="pt") -> dict:
        """Prompt tokens, left-padded, no EOS. No prompt at all (every prompt empty or None) gives nothing: caption."""
        prompts = [text] if isinstance(text, str) or text is None else list(text)
        for index, prompt in enumerate(prompts):
            if prompt is not None and not isinstance(prompt, str):
                raise ValueError(f"prompt {index} is not a string: {prompt!r}")
        prompts = [(prompt or "").strip() for prompt in prompts]
        if not any(prompts):
            return {}
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, padding_side="left", return_tensors=return_tensors)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def tokenize_targets(
        self, text, max_length: int | None = None, return_tensors="pt", pad_to_multiple_of: int | None = None
    ) -> dict:
        """Target tokens + EOS (EOS kept even when truncating to `max_length`) as `labels`, -100 after the end."""
        targets = [text] if isinstance(text, str) else list(text)
        for index, target in enumerate(targets):
            # A reader learns that a line without text reads "" (EOS only); a caption or answer is never empty.
            if not isinstance(target, str) or not (target.strip() or (self.reads_lines and target == "")):
                raise ValueError(f"target {index} (caption or answer) is empty or not a string: {target!r}")
        limit = None if max_length is None else max_length - 1
        ids = self.tokenizer(targets, add_special_tokens=False, truncation=limit is not None, max_length=limit)
        eos = self.tokenizer.eos_token_id
        batch = self.tokenizer.pad(
            {"input_ids": [row + [eos] for row in ids["input_ids"]]},
            padding=True,
            padding_side="right",
            pad_to_multiple_of=pad_to_multiple_of,
            return_tensors=return_tensors,
        )
        labels = batch["input_ids"].clone() if return_tensors == "pt" else np.array(batch["input_ids"])
        labels[batch["attention_mask"] == 0] = -100
        return {"labels": labels}

    def batch_decode(self, sequences, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        """Caption strings; -100 (the padding Trainer puts in labels and predictions) is skipped."""
        sequences = np.asarray(sequences.cpu() if hasattr(sequences, "cpu") else sequences)
        sequences = np.where(sequences < 0, self.tokenizer.pad_token_id, sequences)
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens, **kwargs)
        return [text.strip() for text in texts]

    def decode(self, sequence, skip_special_tokens: bool = True, **kwargs) -> str:
        return self.batch_decode([sequence], skip_special_tokens=skip_special_tokens, **kwargs)[0]

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also readable by transformers 4.x: the image processor in `preprocessor_config.json`, and the tokenizer
        as `PreTrainedTokenizerFast` (5.x writes `TokenizersBackend` or `GPT2Tokenizer`, which 4.x either lacks or
        reads as the slow tokenizer without vocab.json/merges.txt); tokenizer.json holds the whole tokenizer. Its
        pre-tokenizer's `add_prefix_space` is repeated in tokenizer_config.json: 4.x resets it to False otherwise,
        and a prompt ("a red") would then tokenize otherwise than in training ("Ġa red")."""
        files = super().save_pretrained(save_directory, *args, **kwargs)
        self.image_processor.save_pretrained(save_directory)
        tokenizer_config = os.path.join(save_directory, "tokenizer_config.json")
        with open(tokenizer_config, encoding="utf-8") as file:
            config = json.load(file)
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        backend = getattr(self.tokenizer, "backend_tokenizer", None)  # a slow tokenizer (4.x) has none
        pre_tokenizer = backend.pre_tokenizer if backend is not None else None
        if pre_tokenizer is not None and "add_prefix_space" in (state := json.loads(pre_tokenizer.__getstate__())):
            config["add_prefix_space"] = state["add_prefix_space"]
        with open(tokenizer_config, "w", encoding="utf-8") as file:
            json.dump(config, file, indent=2, ensure_ascii=False)
        return files

    @property
    def model_input_names(self):
        return ["pixel_values", "pixel_mask", "input_ids", "attention_mask", "labels"]
