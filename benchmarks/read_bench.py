"""Reading benchmark: a vitgpt2 reader against Tesseract 5 on the same rendered lines and pages, in one run.

    python benchmarks/read_bench.py --model runs/text-lines            # CPU, 200 lines per condition
    python benchmarks/read_bench.py --model runs/text-lines --device cuda
    python benchmarks/read_bench.py --model runs/text-lines --lines 40 --pages 1    # a quick look

Lines are the `test` documents of builtin:text-lines (text the reader never saw), wrapped at 48 characters, drawn
in the training fonts under each condition (clean 32 px, 16 px, 12 px, blur + noise, 2-degree rotation, JPEG q20,
and the hard combination: 20 px, blur 1, noise 30, 1 degree, JPEG q30), and clean in fonts training never used.
Pages are A4 at 150 dpi, 43 lines of test text each. Tesseract reads each line with `--psm 7` (one line) and each
page with `--psm 4`, one process per image, one core (OMP_THREAD_LIMIT=1); vitgpt2 reads lines in batches, with
`--threads` CPU threads (1 by default: the same one core). CER / WER / exact lines are micro-averaged (jiwer);
pages are scored with line breaks as spaces. Prints a table, then the same numbers as JSON.
"""

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import cpu_name  # noqa: E402
from transformers import AutoModel, AutoProcessor, pipeline  # noqa: E402

from modeling_vitgpt2.data.reading.corpus import load_documents  # noqa: E402
from modeling_vitgpt2.data.reading.fonts import TRAIN_FONTS, UNSEEN_FONTS, font_paths  # noqa: E402
from modeling_vitgpt2.data.reading.render import CONDITIONS, lines_per_page, render_line, render_page  # noqa: E402
from modeling_vitgpt2.data.reading.text_lines import split_documents, wrapped_lines  # noqa: E402
from modeling_vitgpt2.metrics.reading import reading_metrics  # noqa: E402

UNSEEN = "unseen fonts (clean 32px)"


def tesseract_read(image, psm: int) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    result = subprocess.run(
        ["tesseract", "stdin", "stdout", "--psm", str(psm), "-l", "eng"],
        input=buffer.getvalue(), capture_output=True, check=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"},
    )  # fmt: skip
    return " ".join(result.stdout.decode("utf-8", "replace").split())


def timed(read, images) -> tuple[list[str], float]:
    start = time.perf_counter()
    texts = read(images)
    return texts, time.perf_counter() - start


def line_sets(documents, count: int, seed: int) -> dict:
    """Condition -> (images, references): the same text under every condition."""
    texts = wrapped_lines(documents, count)
    sets = {}
    for name, degradation in [*CONDITIONS.items(), (UNSEEN, CONDITIONS["clean 32px"])]:
        fonts = font_paths(UNSEEN_FONTS if name == UNSEEN else TRAIN_FONTS)
        rng = random.Random(f"{seed}-{name}")
        images = [render_line(text, fonts[i % len(fonts)], degradation, rng) for i, text in enumerate(texts)]
        sets[name] = (images, texts)
    return sets


def page_set(documents, count: int, seed: int):
    rng, fonts = random.Random(seed), font_paths(TRAIN_FONTS)
    per_page = lines_per_page()
    texts = wrapped_lines(documents, count * per_page, width=70)
    pages = []
    for index in range(count):
        lines = texts[index * per_page : (index + 1) * per_page]
        pages.append((render_page(lines, fonts[index % len(fonts)], rng), " ".join(lines)))
    return pages


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a reader folder, e.g. runs/text-lines")
    parser.add_argument("--lines", type=int, default=200, help="lines per condition (default 200)")
    parser.add_argument("--pages", type=int, default=2, help="A4 pages (default 2)")
    parser.add_argument("--batch", type=int, default=32, help="vitgpt2 lines per batch (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for vitgpt2 (default 1, as Tesseract)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--seed", type=int, default=42, help="the builtin:text-lines seed whose test text is read")
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    # As users load it: from the folder, where config.json names the custom image-to-text pipeline.
    reader = pipeline("image-to-text", model=args.model, device=args.device, trust_remote_code=True)
    documents = split_documents(load_documents(), args.seed)["test"]
    tesseract = shutil.which("tesseract")
    if tesseract is None:
        print("Tesseract is not installed (Debian: apt-get install tesseract-ocr tesseract-ocr-eng): its rows are "
              "skipped", file=sys.stderr)  # fmt: skip
    version = (
        subprocess.run(["tesseract", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        if tesseract
        else None
    )

    def ours(images):
        texts = []
        with torch.inference_mode():
            for start in range(0, len(images), args.batch):
                inputs = processor(images=images[start : start + args.batch]).to(args.device)
                texts += processor.batch_decode(model.generate(**inputs))
        return texts

    rows = []
    for name, (images, references) in line_sets(documents, args.lines, args.seed).items():
        ours(images[: args.batch])  # warm-up: the first batch pays for allocation
        for system, read in (("vitgpt2", ours), ("tesseract", lambda ims: [tesseract_read(i, 7) for i in ims])):
            if system == "tesseract" and tesseract is None:
                continue
            texts, seconds = timed(read, images)
            rows.append({"condition": name, "system": system, **reading_metrics(texts, references),
                         "lines_per_s": len(images) / seconds, "lines": len(images)})  # fmt: skip
            print(f"{name:<26} {system:<10} CER {rows[-1]['cer']:7.2%}  {rows[-1]['lines_per_s']:6.1f} lines/s",
                  file=sys.stderr)  # fmt: skip
    pages = page_set(documents, args.pages, args.seed)
    page_readers = {
        "vitgpt2": lambda page: " ".join(reader(page, line_batch_size=args.batch)[0]["generated_text"].split()),
        "tesseract": lambda page: tesseract_read(page, 4),
    }
    for system, read_page in page_readers.items():
        if system == "tesseract" and tesseract is None or not pages:
            continue
        read_page(pages[0][0])  # warm-up, as for lines: the pipeline's own copy of the model has not run yet
        start = time.perf_counter()
        texts = [read_page(page) for page, _ in pages]
        seconds, lines = time.perf_counter() - start, len(pages) * lines_per_page()
        rows.append({"condition": "A4 pages (clean, 24px)", "system": system,
                     **reading_metrics(texts, [reference for _, reference in pages]),
                     "lines_per_s": lines / seconds, "lines": lines})  # fmt: skip

    hardware = (
        f"{cpu_name()}, vitgpt2 on {args.threads} thread(s)" if args.device == "cpu" else torch.cuda.get_device_name()
    )
    print(f"\nreader {args.model} on {hardware}; Tesseract: {version or 'not installed'}, one core\n")
    header = f"{'condition':<26}{'system':<11}{'CER':>8}{'WER':>8}{'exact':>8}{'lines/s':>9}"
    print(header + "\n" + "-" * len(header))
    for row in rows:
        print(f"{row['condition']:<26}{row['system']:<11}{row['cer']:>8.2%}{row['wer']:>8.2%}"
              f"{row['exact_lines']:>8.1%}{row['lines_per_s']:>9.1f}")  # fmt: skip
    result = {"model": args.model, "hardware": hardware, "tesseract": version, "device": args.device, "rows": rows}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
