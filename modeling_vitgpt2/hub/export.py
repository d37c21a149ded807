"""Hub release: turn a trained checkpoint folder into the folder uploaded to the Hub.

    python -m modeling_vitgpt2 export runs/default exported/ [--repo-id you/vitgpt2-shapes]

The folder holds the weights (safetensors), config.json with auto_map and the image-to-text pipeline,
generation_config.json, processor/tokenizer/image-processor files that transformers 4.57+ and 5.x read, the seven
remote-code modules, handler.py + requirements.txt for Inference Endpoints, example images, the training curves, and
README.md rendered from model_card.md with the run's metrics.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..configuration_vitgpt2 import VitGpt2Config
from ..data.reading.fonts import TRAIN_FONTS, families
from ..modeling_vitgpt2 import VitGpt2ForCaptioning
from ..processing_vitgpt2 import VitGpt2Processor

TEMPLATE = Path(__file__).with_name("model_card.md")  # package data: an installed wheel carries it
READER_TEMPLATE = Path(__file__).with_name("reader_card.md")  # the card of a text reader
HANDLER = Path(__file__).resolve().parent / "endpoint_handler.py"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
RUN_INFO = "run_info.json"  # written by train.py: the command, data and base models of the run
EXAMPLES = "examples"  # written by train.py: test images and their generated captions
CURVES = "training_curves.png"  # written by train.py: the logged training loss, gradient norm and learning rate
METRICS = {"bleu4": ("bleu", "BLEU-4"), "rougeL": ("rouge", "ROUGE-L"), "cider": ("cider", "CIDEr-D"),
           "exact_match": ("exact_match", "Exact match")}  # fmt: skip
READING_METRICS = {"cer": ("cer", "CER"), "wer": ("wer", "WER"), "exact_lines": ("exact_match", "Exact lines")}
REQUIREMENTS = "transformers>=4.57\ntorch\npillow\n"


class ExportError(ValueError):
    """A checkpoint folder that is not a vitgpt2 model; the message says what is missing."""


def check_checkpoint(folder: Path) -> None:
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such folder")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not (folder / "processor_config.json").is_file() and not (folder / "preprocessor_config.json").is_file():
        missing.append("processor_config.json or preprocessor_config.json")
    if (folder / "config.json").is_file():
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        if model_type != VitGpt2Config.model_type:
            raise ExportError(f"{folder}: config.json says model_type={model_type!r}, not a vitgpt2 model")
    if missing:
        raise ExportError(f"{folder}: not a vitgpt2 model folder; missing {', '.join(missing)}")


def _read_json(path: Path, default):
    return json.loads(path.read_text()) if path.is_file() else default


def _result(dataset_name: str, split: str, task: tuple, metric: tuple, value) -> EvalResult:
    """One model-index entry: `task` = (type, name), `metric` = (type, name)."""
    return EvalResult(
        task_type=task[0],
        task_name=task[1],
        dataset_type=dataset_name,
        dataset_name=dataset_name,
        dataset_split=split,
        metric_type=metric[0],
        metric_name=metric[1],
        metric_value=round(float(value), 4),
    )


def _evaluation(metrics: dict, dataset_name: str) -> tuple[list, str]:
    """model-index entries and a Markdown table from Trainer metrics such as test_cider, test_unseen_cider."""
    splits = [key.removesuffix("_cider") for key in sorted(metrics) if key.endswith("_cider")]
    results, rows = [], []
    for split in splits:
        values = {name: metrics.get(f"{split}_{name}") for name in METRICS}
        if any(value is None for value in values.values()):
            continue
        for name, metric in METRICS.items():
            results.append(_result(dataset_name, split, ("image-to-text", "Image captioning"), metric, values[name]))
        rows.append(f"| {split} | " + " | ".join(f"{values[name]:.4f}" for name in METRICS) + " |")
    header = "| split | " + " | ".join(label for _, label in METRICS.values()) + " |\n|" + "---|" * (len(METRICS) + 1)
    tables = [header + "\n" + "\n".join(rows)] if rows else []
    answer_rows = []
    for split in [key.removesuffix("_answer_accuracy") for key in sorted(metrics) if key.endswith("_answer_accuracy")]:
        task, metric = ("visual-question-answering", "Visual question answering"), ("accuracy", "Answer accuracy")
        results.append(_result(dataset_name, split, task, metric, metrics[f"{split}_answer_accuracy"]))
        by_type = {key.removeprefix(f"{split}_answer_accuracy_"): value for key, value in sorted(metrics.items())
                   if key.startswith(f"{split}_answer_accuracy_")}  # fmt: skip
        detail = ", ".join(f"{kind} {value:.1%}" for kind, value in by_type.items())
        answer_rows.append(f"| {split} | {metrics[f'{split}_answer_accuracy']:.1%} | {detail} |")
    if answer_rows:
        tables.append("| split | answer accuracy | by question type |\n|---|---|---|\n" + "\n".join(answer_rows))
    reading_rows = []
    for split in [key.removesuffix("_cer") for key in sorted(metrics) if key.endswith("_cer")]:
        for name, metric in READING_METRICS.items():
            task = ("image-to-text", "Optical character recognition")
            results.append(_result(dataset_name, split, task, metric, metrics[f"{split}_{name}"]))
        reading_rows.append(
            f"| {split} | " + " | ".join(f"{metrics[f'{split}_{name}']:.2%}" for name in READING_METRICS) + " |"
        )
    if reading_rows:
        tables.append("| split | CER | WER | exact lines |\n|---|---|---|---|\n" + "\n".join(reading_rows))
    if not tables:
        return [], "No evaluation results were recorded with this checkpoint."
    return results, "\n\n".join(tables)


def _examples_table(examples: list, intro: str, output_label: str) -> str:
    """The card's table of example images, the question asked (a column only when one was), what the model wrote for
    each, and the reference ("" without examples)."""
    if not examples:
        return ""
    asked = any(example.get("prompt") for example in examples)
    columns = ["image", *["prompt"] * asked, f"{output_label} or answer" if asked else output_label, "reference"]

    def row(example: dict) -> str:
        prompt = [example.get("prompt") or f"(none: a {output_label})"] * asked
        cells = [f"![]({example['file']})", *prompt, example["caption"], example["reference"]]
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    intro += ", and its answers to questions about them" if asked else ""
    header = "| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|\n"
    return f"{intro}:\n\n" + header + "\n".join(row(example) for example in examples)


def _curves_line(curves: bool) -> str:
    return f"![Training loss, gradient norm and learning rate by step]({CURVES})" if curves else ""


def render_reader_card(model, run: dict, metrics: dict, examples: list, repo_id: str, curves: bool = False) -> str:
    config = model.config
    dataset_name = run.get("dataset", "unknown")
    builtin = dataset_name == "builtin:text-lines"
    eval_results, evaluation_table = _evaluation(metrics, dataset_name)
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-to-text",
        tags=["custom_code", "ocr", "vitgpt2"],
        license="apache-2.0",
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )
    examples_table = _examples_table(examples, "Lines this model read from the test split", "read")
    card = ModelCard.from_template(
        card_data,
        template_path=str(READER_TEMPLATE),
        repo_id=repo_id,
        line_height=config.line_height,
        column_width=config.column_width,
        column_merge=config.column_merge,
        feature_size=config.vision_feature_size,
        ctc_weight=config.ctc_decoding_weight,
        vision_description=describe_vision_tower(config.vision_config),
        text_description=f"{config.text_config.n_layer} layers, width {config.text_config.n_embd}",
        parameter_count=f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M",
        training_description=f"Trained from scratch with `train.py` of vitgpt2 and `Seq2SeqTrainer` on `{dataset_name}`"
        + (f": The World Factbook's prose drawn in {len(TRAIN_FONTS)} font faces with random degradations."
           if builtin else "."),  # fmt: skip
        training_command=run.get("command", "python train.py"),
        evaluation_table=evaluation_table,
        examples_table=examples_table,
        training_curves=_curves_line(curves),
        limitation_data=(
            f"Trained on single lines of printed English in {len(TRAIN_FONTS)} faces of {len(families(TRAIN_FONTS))} "
            "font families: faces of other designs read worse"
            + (f" ({metrics['test_unseen_fonts_cer']:.1%} CER on five unseen ones)" if "test_unseen_fonts_cer" in
               metrics else "")
            + ", and other scripts, handwriting, tables and multi-column layouts are beyond it."
            if builtin
            else f"It saw `{dataset_name}` and reads only what resembles it."
        ),
    )
    return str(card)


def describe_vision_tower(vision) -> str:
    """The vision tower in a few words for a card: its kind, depth, width, images and patches."""
    if vision.model_type == "convnext":
        return (
            f"ConvNeXt ({sum(vision.depths)} blocks, widths {list(vision.hidden_sizes)}, {vision.image_size}px "
            f"images, a {vision.patch_size}px stem)"
        )
    return (
        f"{vision.model_type} ({vision.num_hidden_layers} layers, width {vision.hidden_size}, {vision.image_size}px "
        f"images, {vision.patch_size}px patches)"
    )


def render_card(model, run: dict, metrics: dict, examples: list, repo_id: str, curves: bool = False) -> str:
    """The card's README.md; `curves`: the folder ships the run's training curves (CURVES), and the card shows them."""
    config = model.config
    if config.vision_feature == "columns":
        return render_reader_card(model, run, metrics, examples, repo_id, curves)
    dataset_name = run.get("dataset", "unknown")
    eval_results, evaluation_table = _evaluation(metrics, dataset_name)
    base_models = [
        name for name in (run.get("vision_model"), run.get("text_model")) if name and not os.path.isdir(name)
    ]
    is_hub_dataset = dataset_name and "/" in dataset_name and not os.path.exists(dataset_name)
    widget = [
        {
            "src": f"https://huggingface.co/{repo_id}/resolve/main/{example['file']}",
            "example_title": example["caption"],
            "output": {"text": example["caption"]},
        }
        for example in examples
        if not example.get("prompt")  # the Hub's image-to-text widget sends the image alone
    ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-to-text",
        tags=["custom_code", "image-captioning", "vitgpt2", "clipcap"],
        license="apache-2.0",
        datasets=[dataset_name] if is_hub_dataset else None,
        base_model=base_models or None,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
        widget=widget or None,
    )
    vision = config.vision_config
    pooled = config.vision_feature == "pooled"
    patches = "the last feature map's cells" if vision.model_type == "convnext" else "patch tokens"
    examples_table = _examples_table(examples, "Captions this model generated for evaluation images", "caption")
    from_scratch = not run.get("vision_model")
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        repo_id=repo_id,
        vision_description=describe_vision_tower(vision),
        feature_description=f"{'pooled embedding' if pooled else patches} ({config.vision_feature_size}-d)",
        prefix_description=(f"{config.prefix_length} prefix token(s)" if pooled else "one prefix token each")
        + ("; in GPT-2 each attends to itself only, and a learned token after them reads them all"
           if config.isolate_image_tokens else ""),
        text_description=f"{config.text_config.n_layer} layers, width {config.text_config.n_embd}",
        projection_in=config.vision_feature_size,
        projection_hidden=config.projection_hidden_size,
        projection_out=config.text_config.n_embd * config.prefix_length,
        parameter_count=f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M",
        training_description=(
            "Trained from scratch (vision tower, projection and GPT-2) with `train.py` of vitgpt2 and "
            f"`Seq2SeqTrainer` on `{dataset_name}`."
            if from_scratch
            else f"Built from `{run.get('vision_model')}` and `{run.get('text_model')}` and trained with `train.py` "
            f"of vitgpt2 and `Seq2SeqTrainer` on `{dataset_name}`."
        ),
        training_command=run.get("command", "python train.py"),
        evaluation_table=evaluation_table,
        examples_table=examples_table,
        training_curves=_curves_line(curves),
        prompt_description=(
            "the questions of its training data, asked as `Question: ... Answer:`"
            if any(key.endswith("_answer_accuracy") for key in metrics)
            else "none: it was trained to caption, so a prompt can only start the caption"
        ),
        limitation_data=(
            "this one saw only the built-in scenes of coloured shapes, so it captions nothing else meaningfully."
            if dataset_name.startswith("builtin:shapes")
            else f"it saw `{dataset_name}` and inherits its biases and blind spots."
        ),
    )
    return str(card)


def export(checkpoint, out_dir, repo_id: str | None = None) -> Path:
    """Writes the Hub folder for `checkpoint` into `out_dir` (replaced whole, only once complete)."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    check_checkpoint(checkpoint)
    if out_dir.resolve() == checkpoint.resolve():
        raise ExportError(f"{out_dir}: export into a new folder, not into the checkpoint itself")
    repo_id = repo_id or f"your-username/{checkpoint.resolve().name}"
    model = VitGpt2ForCaptioning.from_pretrained(checkpoint)
    processor = VitGpt2Processor.from_pretrained(checkpoint)
    run = _read_json(checkpoint / RUN_INFO, {})
    metrics = _read_json(checkpoint / "all_results.json", {})
    examples = _read_json(checkpoint / EXAMPLES / "examples.json", [])

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        shutil.copyfile(HANDLER, staging / "handler.py")
        (staging / "requirements.txt").write_text(REQUIREMENTS)
        if examples:
            shutil.copytree(checkpoint / EXAMPLES, staging / EXAMPLES)
        curves = (checkpoint / CURVES).is_file()
        if curves:
            shutil.copyfile(checkpoint / CURVES, staging / CURVES)
        (staging / "README.md").write_text(render_card(model, run, metrics, examples, repo_id, curves))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def push(folder, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Uploads exactly the exported folder."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True, private=private)
    return api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, commit_message="Upload vitgpt2 captioner"
    ).commit_url
