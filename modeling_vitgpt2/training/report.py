"""What a finished run shows: a metrics table, captions (and answers) beside their references, a picture of both, and
the training curves."""

import json
import os
import textwrap

from PIL import Image, ImageDraw, ImageFont

from ..data.loading import as_caption_list, prompts_of
from ..processing_vitgpt2 import load_image

METRIC_COLUMNS = ("exact_match", "bleu4", "rougeL", "cider")


def print_metrics_table(results: dict, columns=METRIC_COLUMNS) -> None:
    """results: {split prefix: Trainer metrics with keys like 'test_cider' (and 'test_answer_accuracy_count')}."""
    names = list(columns)
    for prefix, metrics in results.items():
        answers = sorted(name[len(prefix) + 1 :] for name in metrics if name.startswith(f"{prefix}_answer_accuracy"))
        names += [name for name in answers if name not in names]
    for start in range(0, len(names), 6):  # six columns a table, so a terminal does not wrap it
        shown = names[start : start + 6]
        header = f"{'split':<14}" + "".join(f"{name.replace('answer_accuracy', 'answers'):>18}" for name in shown)
        print("\n" + header + "\n" + "-" * len(header))
        for prefix, metrics in results.items():
            row = [metrics.get(f"{prefix}_{name}", float("nan")) for name in shown]
            print(f"{prefix:<14}" + "".join(f"{value:>18.4f}" for value in row))
    print()


def grid_font(size: int = 12) -> ImageFont.FreeTypeFont:
    """DejaVu Sans where the system has it (Debian does), else Pillow's bundled scalable font: both leave clear
    spaces between words, which Pillow's tiny default font does not."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size + 1)


def sample_indices(dataset, count: int) -> list[int]:
    """`count` examples to show, spread over the split (a question split holds several rows per image)."""
    step = max(1, len(dataset) // max(1, count))
    return list(range(0, len(dataset), step))[:count]


def _asked(prompt: str) -> str:
    return f"{prompt} " if prompt else ""


def print_sample_captions(prefix: str, dataset, captions, indices) -> None:
    print(f"{prefix}: [prompt] generated text  |  reference")
    prompts = prompts_of(dataset)
    for index in indices:
        reference = as_caption_list(dataset[index]["captions"])[0]
        mark = "=" if captions[index] == reference else "x"
        print(f"  {mark} {_asked(prompts[index]) + repr(captions[index]):<60} | {reference!r}")
    print()


def caption_grid(dataset, captions, indices, columns: int = 4, thumb: int = 192) -> Image.Image:
    """Test images in a grid, each with its prompt (if any) and generated text below it (and, in red, the reference
    it missed)."""
    width = 38  # characters per line at 12 px
    font = grid_font()
    rows = max(1, -(-len(indices) // columns))
    cell_w, cell_h = thumb + 96, thumb + 110
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    prompts = prompts_of(dataset)
    for cell, index in enumerate(indices):
        x, y = (cell % columns) * cell_w, (cell // columns) * cell_h
        image = load_image(dataset[index]["image"])
        scale = thumb / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        sheet.paste(image.resize(size, Image.NEAREST if scale > 1 else Image.BICUBIC), (x + 48, y + 4))
        reference = as_caption_list(dataset[index]["captions"])[0]
        lines = [(line, (0, 0, 160)) for line in textwrap.wrap(prompts[index], width)[:2]]
        lines += [(line, "black") for line in textwrap.wrap(captions[index], width)[:3]]
        if captions[index] != reference:
            lines += [(line, (200, 0, 0)) for line in textwrap.wrap("reference: " + reference, width)[:3]]
        for number, (line, colour) in enumerate(lines):
            draw.text((x + 8, y + thumb + 10 + 14 * number), line, fill=colour, font=font)
    return sheet


def line_sheet(dataset, texts, indices) -> Image.Image:
    """Text-line images at their own size, each with what was read under it (and, in red, the reference it missed)."""
    font = grid_font()
    rows = [dataset[index] for index in indices]  # each row read (and its image decoded) once
    images = [load_image(row["image"]) for row in rows]
    references = [(as_caption_list(row["captions"]) or [""])[0] for row in rows]  # "": a blank line
    width = max([600] + [image.width + 16 for image in images])
    heights = [image.height + 8 + 16 * (1 + (texts[index] != reference))
               for image, index, reference in zip(images, indices, references)]  # fmt: skip
    sheet = Image.new("RGB", (width, sum(heights) + 8), "white")
    draw, y = ImageDraw.Draw(sheet), 8
    for image, index, reference, height in zip(images, indices, references, heights):
        sheet.paste(image, (8, y))
        draw.text((8, y + image.height + 4), "read: " + texts[index], fill="black", font=font)
        if texts[index] != reference:
            draw.text((8, y + image.height + 20), "reference: " + reference, fill=(200, 0, 0), font=font)
        y += height
    return sheet


def write_examples(folder: str, dataset, captions, count: int) -> None:
    """A few evaluation images with what the model generated for them, for the model card and the demo page's
    examples: `count` captions, and where the split asks questions, `count` questions (spread over the split) with the
    model's answers. Each entry: file, prompt ("" for a caption), caption (what the model wrote), reference."""
    os.makedirs(folder, exist_ok=True)
    prompts = prompts_of(dataset)[: len(captions)]
    captioned = [index for index, prompt in enumerate(prompts) if not prompt]
    asked = [index for index, prompt in enumerate(prompts) if prompt]
    examples = []
    questions = [asked[position] for position in sample_indices(asked, count)]
    for kind, chosen in (("example", captioned[:count]), ("question", questions)):
        for number, index in enumerate(chosen):
            name = f"{kind}_{number}.png"
            load_image(dataset[index]["image"]).save(os.path.join(folder, name))
            reference = as_caption_list(dataset[index]["captions"])[0]
            example = {"file": f"{os.path.basename(folder)}/{name}", "prompt": prompts[index]}
            examples.append(example | {"caption": captions[index], "reference": reference})
    with open(os.path.join(folder, "examples.json"), "w") as file:
        json.dump(examples, file, indent=2)


def plot_training_curves(log_history: list[dict], path: str) -> bool:
    """The Trainer's logged training loss, gradient norm and learning rate against the step, epochs along the top;
    written to `path` as a PNG. False (nothing written) when the run logged no loss (it ended before its first
    logging step)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit to import
    from matplotlib import pyplot

    logged = [entry for entry in log_history if "loss" in entry and "step" in entry]
    if not logged:
        return False
    panels = [
        ("training loss", "loss", "log"),
        ("gradient norm", "grad_norm", "log"),
        ("learning rate", "learning_rate", "linear"),
    ]
    panels = [panel for panel in panels if any(entry.get(panel[1]) is not None for entry in logged)]
    figure, axes = pyplot.subplots(len(panels), 1, figsize=(7, 2.2 * len(panels) + 0.6), sharex=True, squeeze=False)
    for axis, (title, key, scale) in zip(axes[:, 0], panels):
        points = [(entry["step"], entry[key]) for entry in logged if entry.get(key) is not None]
        axis.plot(*zip(*points), marker="." if len(points) < 30 else None)
        axis.set_ylabel(title)
        if scale == "log" and all(value > 0 for _, value in points):
            axis.set_yscale("log")
        axis.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    last = logged[-1]
    if last.get("epoch"):
        per_epoch = last["step"] / last["epoch"]  # steps per epoch, as the last logged entry counts them
        top = axes[0, 0].secondary_xaxis("top", functions=(lambda s: s / per_epoch, lambda e: e * per_epoch))
        top.set_xlabel("epoch")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return True
