"""What a finished run shows: a metrics table, captions beside their references, and a picture of both."""

import json
import os
import textwrap

from PIL import Image, ImageDraw

from .data import as_caption_list
from .processing_vitgpt2 import load_image

METRIC_COLUMNS = ("exact_match", "bleu4", "rougeL", "cider")


def print_metrics_table(results: dict) -> None:
    """results: {split prefix: Trainer metrics with keys like 'test_cider'}."""
    header = f"{'split':<14}" + "".join(f"{name:>13}" for name in METRIC_COLUMNS)
    print("\n" + header + "\n" + "-" * len(header))
    for prefix, metrics in results.items():
        row = [metrics.get(f"{prefix}_{name}", float("nan")) for name in METRIC_COLUMNS]
        print(f"{prefix:<14}" + "".join(f"{value:>13.4f}" for value in row))
    print()


def print_sample_captions(prefix: str, dataset, captions, count: int) -> None:
    print(f"{prefix}: generated caption  |  reference")
    for index in range(count):
        reference = as_caption_list(dataset[index]["captions"])[0]
        mark = "=" if captions[index] == reference else "x"
        print(f"  {mark} {captions[index]!r:<55} | {reference!r}")
    print()


def caption_grid(dataset, captions, count: int, columns: int = 4, thumb: int = 192) -> Image.Image:
    """Test images in a grid, each with its generated caption below it (and, in red, the reference it missed)."""
    width = 40  # characters per caption line in PIL's default font
    rows = max(1, -(-count // columns))
    cell_w, cell_h = thumb + 96, thumb + 84
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for index in range(count):
        x, y = (index % columns) * cell_w, (index // columns) * cell_h
        image = load_image(dataset[index]["image"])
        scale = thumb / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        sheet.paste(image.resize(size, Image.NEAREST if scale > 1 else Image.BICUBIC), (x + 48, y + 4))
        reference = as_caption_list(dataset[index]["captions"])[0]
        lines = [(line, "black") for line in textwrap.wrap(captions[index], width)[:3]]
        if captions[index] != reference:
            lines += [(line, (200, 0, 0)) for line in textwrap.wrap("reference: " + reference, width)[:3]]
        for number, (line, colour) in enumerate(lines):
            draw.text((x + 8, y + thumb + 10 + 12 * number), line, fill=colour)
    return sheet


def write_examples(folder: str, dataset, captions, count: int) -> None:
    """A few evaluation images with their generated captions, for the model card's widget and examples table."""
    os.makedirs(folder, exist_ok=True)
    examples = []
    for index in range(min(count, len(captions))):
        name = f"example_{index}.png"
        load_image(dataset[index]["image"]).save(os.path.join(folder, name))
        reference = as_caption_list(dataset[index]["captions"])[0]
        examples.append(
            {"file": f"{os.path.basename(folder)}/{name}", "caption": captions[index], "reference": reference}
        )
    with open(os.path.join(folder, "examples.json"), "w") as file:
        json.dump(examples, file, indent=2)
