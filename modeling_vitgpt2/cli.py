"""Command line:

python -m modeling_vitgpt2 caption IMAGE [IMAGE ...] --model DIR_OR_HUB_ID [--prompt TEXT]
python -m modeling_vitgpt2 read IMAGE [IMAGE ...] --model DIR_OR_HUB_ID      # a reader: a line or a page
python -m modeling_vitgpt2 export CHECKPOINT OUT_DIR
"""

import argparse
import json
import sys

import torch
from tqdm.auto import tqdm


def caption_command(args) -> int:
    from transformers import AutoModel, AutoProcessor

    from .processing_vitgpt2 import ImageLoadError, load_image

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    generate_kwargs = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}

    results = {}  # path -> {"caption": ...} or {"error": ...}, printed in the order given
    loaded = []
    for path in args.images:
        try:
            loaded.append((path, load_image(path)))
        except ImageLoadError as error:
            results[path] = {"error": str(error)}
    batches = range(0, len(loaded), args.batch_size)
    for start in tqdm(batches, desc="captioning", unit="batch", disable=len(batches) < 2, file=sys.stderr):
        batch = loaded[start : start + args.batch_size]
        images = [image for _, image in batch]
        inputs = processor(images=images, text=[args.prompt] * len(images) if args.prompt else None)
        with torch.inference_mode():
            ids = model.generate(**inputs, **generate_kwargs)
        for (path, _), caption in zip(batch, processor.batch_decode(ids)):
            results[path] = {"caption": caption}

    failed = 0
    ordered = [{"image": path, **results[path]} for path in dict.fromkeys(args.images)]
    for row in ordered:
        if "error" in row:
            failed += 1
            print(f"error: {row['error']}", file=sys.stderr)
        elif not args.json:
            print(f"{row['image']}\t{row['caption']}")
    if args.json:
        print(json.dumps(ordered, indent=2, ensure_ascii=False))
    if failed:
        print(f"{failed} of {len(ordered)} images could not be captioned", file=sys.stderr)
    return 1 if failed else 0


def read_command(args) -> int:
    from transformers import pipeline

    from .processing_vitgpt2 import ImageLoadError, load_image

    reader = pipeline("image-to-text", model=args.model, trust_remote_code=True)
    if not reader.reads_lines:
        print(f"error: {args.model} is a captioner, not a reader; use the caption command", file=sys.stderr)
        return 2
    rows, failed = [], 0
    for path in tqdm(args.images, desc="reading", unit="image", disable=len(args.images) < 2, file=sys.stderr):
        try:
            image = load_image(path, max_side=args.max_side)
        except ImageLoadError as error:
            rows.append({"image": path, "error": str(error)})
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        with torch.inference_mode():
            text = reader(image, line_batch_size=args.batch_size)[0]["generated_text"]
        rows.append({"image": path, "text": text})
        if not args.json:
            print(f"==> {path} <==\n{text}" if len(args.images) > 1 else text)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    if failed:
        print(f"{failed} of {len(rows)} images could not be read", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_vitgpt2",
        description="vitgpt2: caption images with a ViT -> MLP -> GPT-2 captioning model.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    caption = commands.add_parser(
        "caption",
        help="caption image files",
        description="Prints one line per image, 'PATH<TAB>caption' (or the answer to --prompt). Images that cannot "
        "be read are reported on stderr and the others are still captioned; the exit status is 1 if any image failed.",
    )
    caption.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads) or URLs")
    caption.add_argument(
        "--model", required=True, help="a saved model folder (e.g. runs/default) or a Hub id (e.g. user/vitgpt2-coco)"
    )
    caption.add_argument(
        "--prompt",
        help="ask the same of every image, e.g. 'Question: how many red circles are there? Answer:' (the model "
        "writes what follows; without it the model captions)",
    )
    caption.add_argument("--json", action="store_true", help="print a JSON list of {image, caption | error}")
    caption.add_argument("--max-new-tokens", type=int, default=32, help="longest caption, in tokens (default 32)")
    caption.add_argument("--num-beams", type=int, default=1, help="beam search width; 1 = greedy (default 1)")
    caption.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    caption.set_defaults(run=caption_command)

    read = commands.add_parser(
        "read",
        help="read the text in images of text lines or pages (with a reader, e.g. runs/text-lines)",
        description="Prints the text of each image: one line, or a page's lines top to bottom (a page is cut into "
        "lines by a projection-profile segmenter, up to 3 degrees of skew straightened). With several images each "
        "text follows a '==> PATH <==' header. Unreadable images are reported on stderr; the exit status is then 1.",
    )
    read.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads) or URLs")
    read.add_argument("--model", required=True, help="a saved reader folder (e.g. runs/text-lines) or a Hub id")
    read.add_argument("--json", action="store_true", help="print a JSON list of {image, text | error}")
    read.add_argument("--batch-size", type=int, default=32, help="lines per forward pass (default 32)")
    read.add_argument(
        "--max-side",
        type=int,
        default=4096,
        help="longest image side accepted, in pixels (default 4096: A4 at 300 dpi fits)",
    )
    read.set_defaults(run=read_command)

    export = commands.add_parser(
        "export",
        help="write a Hub-ready folder from a trained checkpoint",
        description="Writes OUT_DIR: weights, config with auto_map and the image-to-text pipeline, processor and "
        "tokenizer files for transformers 4.57+ and 5.x, the remote code, handler.py + requirements.txt for "
        "Inference Endpoints, example images, the training curves, and README.md (the model card with the run's "
        "metrics).",
    )
    export.add_argument("checkpoint", help="a folder train.py wrote (e.g. runs/default)")
    export.add_argument("out_dir", help="the folder to write (replaced if it exists)")
    export.add_argument("--repo-id", help="the Hub repo the card's examples and snippets point to (user/name)")
    export.add_argument("--push", action="store_true", help="also upload the folder to --repo-id")
    export.set_defaults(run=export_command)
    return parser


def export_command(args) -> int:
    from .hub.export import ExportError, export, push

    if args.push and not args.repo_id:
        print("error: --push needs --repo-id", file=sys.stderr)
        return 2
    try:
        folder = export(args.checkpoint, args.out_dir, repo_id=args.repo_id)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"exported {args.checkpoint} to {folder}")
    if args.push:
        print(f"uploaded: {push(folder, args.repo_id)}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
