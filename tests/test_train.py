"""train.py end to end, run as users run it: a subprocess on the real Seq2SeqTrainer, datasets and evaluate."""

import json
import math
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO, TINY, distinct_images, results_of, run_train
from PIL import Image


def colours(caption: str) -> frozenset:
    from modeling_vitgpt2.data.shapes import COLOURS

    return frozenset(word for word in caption.split() if word in COLOURS)


def test_do_eval_alone_scores_a_saved_model_without_training_it(short_run, tmp_path):
    out, _ = short_run
    evaluated = tmp_path / "evaluated"
    run_train(*TINY, "--builtin_train_size", "3000", "--do_eval", "--model_name_or_path", out, output_dir=evaluated)
    metrics = results_of(evaluated)
    assert "train_loss" not in metrics and not (evaluated / "model.safetensors").exists()
    assert metrics["test_exact_match"] == results_of(out)["test_exact_match"]  # the same model, scored the same


def test_short_run_beats_the_majority_baseline_and_its_checkpoint_loads(short_run):
    import datasets
    from transformers import AutoModel, pipeline

    from modeling_vitgpt2.data.shapes import load_shapes_dataset

    out, result = short_run
    metrics = results_of(out)
    for key in (
        "test_exact_match",
        "test_cider",
        "test_bleu4",
        "test_rougeL",
        "test_unseen_exact_match",
        "test_unseen_cider",
        "eval_cider",
        "train_loss",
    ):
        assert key in metrics, key
    assert "exact_match" in result.stdout and "test_unseen" in result.stdout  # the printed table
    assert (out / "test_captions.png").exists()
    assert "training_curves.png" in result.stderr  # the log says where the curves are
    with Image.open(out / "training_curves.png") as curves:
        assert curves.format == "PNG" and curves.width >= 600 and curves.height >= 400
        # Drawn, not blank: the three panels' lines and labels are far from one colour.
        assert len(curves.convert("L").getcolors()) > 16  # an "L" image has at most 256 levels: never None

    data = load_shapes_dataset(train_size=3000, eval_size=48, image_size=64, seed=42)
    # The colour words of each test caption, against always answering the most common colour words of training.
    majority = Counter(colours(c[0]) for c in data["train"]["captions"]).most_common(1)[0][0]
    references = [colours(c[0]) for c in data["test"]["captions"]]
    baseline = sum(reference == majority for reference in references) / len(references)

    captioner = pipeline("image-to-text", model=str(out), trust_remote_code=True)
    captions = [row[0]["generated_text"] for row in captioner(list(data["test"]["image"]), batch_size=16)]
    accuracy = sum(colours(c) == r for c, r in zip(captions, references)) / len(references)
    assert accuracy > baseline + 0.2, f"colour accuracy {accuracy:.2f} vs majority baseline {baseline:.2f}"
    assert type(AutoModel.from_pretrained(out, trust_remote_code=True)).__name__ == "VitGpt2ForCaptioning"
    assert isinstance(data, datasets.DatasetDict)


def test_training_curves_are_drawn_from_the_logged_losses_only(tmp_path):
    from modeling_vitgpt2.training.report import plot_training_curves

    path = tmp_path / "curves.png"
    # A run that ended before its first logging step has only the Trainer's summary: nothing to draw.
    assert not plot_training_curves([{"train_runtime": 1.5, "train_loss": 2.0, "epoch": 0.1, "step": 3}], path)
    assert not path.exists()
    history = [{"loss": 3 / step, "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": step / 10, "step": step}
               for step in range(1, 21)]  # fmt: skip
    assert plot_training_curves(history, path)
    with Image.open(path) as curves:
        assert curves.format == "PNG"


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        str(REPO / "train.py"),
        "--output_dir",
        str(out),
        *TINY,
        "--max_steps",
        "6",
        "--per_device_train_batch_size",
        "8",
        "--ddp_backend",
        "gloo",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert results_of(out)["train_runtime"] > 0 and "test_cider" in results_of(out)
    from transformers import pipeline

    captioner = pipeline("image-to-text", model=str(out), trust_remote_code=True)
    assert isinstance(captioner(distinct_images(1)[0])[0]["generated_text"], str)


def test_kill_and_resume_ends_with_the_same_metrics(tmp_path):
    # No wall-time budget here (TINY has one): its clock restarts on resuming and steers the learning rate, so only a
    # plan of steps can be resumed exactly (in bf16 on an AMX CPU even two straight runs of TINY differ by 1e-4).
    args = [*TINY, "--max_train_minutes", "0", "--max_steps", "40", "--save_steps", "10", "--learning_rate", "2e-3"]
    run_train(*args, output_dir=tmp_path / "straight")

    killed = tmp_path / "killed"
    command = [sys.executable, str(REPO / "train.py"), "--output_dir", str(killed), *args]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint-20" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "training ended before checkpoint-20"
        time.sleep(0.2)
    process.kill()
    process.wait()
    assert not (killed / "all_results.json").exists()
    # A save the kill interrupted: no trainer_state.json, so it must not be resumed from.
    shutil.rmtree(killed / "checkpoint-30", ignore_errors=True)
    (killed / "checkpoint-30").mkdir()
    (killed / "checkpoint-30" / "model.safetensors").write_bytes(b"half written")

    resumed = run_train(*args, output_dir=killed)
    assert re.search(r"resuming from .*checkpoint-20", resumed.stderr), resumed.stderr[-2000:]
    straight, again = results_of(tmp_path / "straight"), results_of(killed)
    for key in ("test_exact_match", "test_cider", "test_bleu4", "test_unseen_cider", "eval_loss", "test_loss"):
        assert again[key] == pytest.approx(straight[key], rel=1e-4, abs=1e-6), key


def write_folder_dataset(folder: Path, bad: bool) -> Path:
    """An imagefolder dataset with COCO-style lists of captions; with `bad`, corrupt images and empty captions."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, image in enumerate(distinct_images(24, size=32)):
        name = f"img{index:02d}.png"
        image.save(folder / name)
        rows.append({"file_name": name, "captions": [f"picture number {index}", f"image {index}"]})
    if bad:
        (folder / "broken.png").write_bytes(b"not a png at all")
        good = (folder / "img00.png").read_bytes()
        (folder / "truncated.png").write_bytes(good[: len(good) // 2])
        rows += [
            {"file_name": "broken.png", "captions": ["a broken file"]},
            {"file_name": "truncated.png", "captions": ["a truncated file"]},
            {"file_name": "img01.png", "captions": []},
            {"file_name": "img02.png", "captions": ["", "  "]},
        ]
    with open(folder / "metadata.jsonl", "w") as file:
        for row in rows:
            file.write(json.dumps(row) + "\n")
    return folder


FOLDER_RUN = [
    "--scratch_width",
    "64",
    "--scratch_layers",
    "2",
    "--scratch_image_size",
    "32",
    "--scratch_patch_size",
    "8",
    "--eval_split",
    "train",
    "--test_splits",
    "",
    "--max_steps",
    "4",
    "--per_device_train_batch_size",
    "4",
    "--max_eval_samples",
    "8",
    "--max_train_minutes",
    "5",
]


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_bad_examples_are_skipped_counted_and_reported(tmp_path, streaming):
    data = write_folder_dataset(tmp_path / "data", bad=True)
    extra = ["--streaming"] if streaming else []
    result = run_train("--dataset", data, *FOLDER_RUN, *extra, output_dir=tmp_path / "run")
    metrics = results_of(tmp_path / "run")
    assert metrics["train_skipped_examples"] == 4
    assert "unreadable image" in result.stderr and "empty or missing caption" in result.stderr
    assert "broken.png" in result.stderr

    strict = run_train("--dataset", data, *FOLDER_RUN, "--strict", output_dir=tmp_path / "strict", check=False)
    assert strict.returncode != 0 and "--strict" in strict.stderr and "Traceback" not in strict.stderr


def test_dataset_errors_are_clear_at_start_up(tmp_path):
    data = write_folder_dataset(tmp_path / "data", bad=False)
    cases = [
        (["--dataset", tmp_path / "nowhere"], "no such file or folder"),
        (["--dataset", tmp_path / "nowhere.jsonl"], "no such file"),
        (["--dataset", data, "--caption_column", "text"], "the columns are"),
    ]
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"image": str(tmp_path / "data" / "img00.png"), "caption": ""}) + "\n")
    cases.append((["--dataset", empty], "no usable examples"))
    for args, message in cases:
        result = run_train(*args, *FOLDER_RUN, output_dir=tmp_path / "out", check=False, timeout=120)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr[-1500:])
        assert "Traceback" not in result.stderr


def test_push_to_hub_fails_at_start_up_when_offline(tmp_path):
    start = time.monotonic()
    result = run_train(
        "--push_to_hub",
        "--hub_model_id",
        "someone/vitgpt2",
        *FOLDER_RUN,
        output_dir=tmp_path,
        check=False,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "HF_TOKEN": ""},
    )
    assert result.returncode != 0 and "--push_to_hub" in result.stderr
    assert not (tmp_path / "all_results.json").exists() and time.monotonic() - start < 60


def test_frozen_vision_feature_cache_gives_the_same_losses(tmp_path, clip_dir, gpt2_dir):
    data = write_folder_dataset(tmp_path / "data", bad=False)
    common = [
        "--dataset",
        data,
        "--vision_model",
        clip_dir,
        "--text_model",
        gpt2_dir,
        "--eval_split",
        "train",
        "--test_splits",
        "",
        "--max_steps",
        "12",
        "--per_device_train_batch_size",
        "4",
        "--max_eval_samples",
        "8",
        "--logging_steps",
        "1",
        "--feature_cache_dir",
        tmp_path / "cache",
        "--learning_rate",
        "1e-3",
        # float32: live and cached features are then the same arithmetic. Under bf16 autocast (train.py's default on
        # an AMX CPU or a GPU) the live frozen tower runs in bf16, while the cache keeps the float32 features it
        # computed once, so the losses differ by bf16 rounding (1e-5 here).
        "--bf16",
        "False",
    ]
    run_train(*common, "--feature_cache", "False", output_dir=tmp_path / "plain")
    first = run_train(*common, output_dir=tmp_path / "cached")
    # Data-loader workers only read the filled cache (they draw captions with their own seeds, so no loss match).
    again = run_train(*common, "--dataloader_num_workers", "2", output_dir=tmp_path / "cached_again")
    assert "vision features cached in" in first.stderr and "vision features: train" in again.stderr

    def losses(folder):
        history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
        return [entry["loss"] for entry in history if "loss" in entry]

    plain = losses(tmp_path / "plain")
    assert len(plain) == 12
    assert losses(tmp_path / "cached") == pytest.approx(plain, rel=1e-5)
    assert len(losses(tmp_path / "cached_again")) == 12
    cached_files = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(cached_files) == 24  # one entry per distinct image, reused by the second run


def test_length_grouped_sampling_runs_on_caption_lengths(tmp_path):
    # The Trainer's length-grouped sampler needs lengths; train.py gives it caption word counts.
    grouped = ["--train_sampling_strategy", "group_by_length", "--max_steps", "6", "--test_splits", ""]
    result = run_train(*TINY, *grouped, output_dir=tmp_path)
    assert "caption lengths" in result.stderr
    assert math.isfinite(results_of(tmp_path)["train_loss"])


def test_wall_time_budget_stops_training_with_the_learning_rate_annealed(tmp_path):
    out = tmp_path / "budget"
    result = run_train(
        *TINY, "--max_train_minutes", "0.15", "--max_steps", "100000", "--logging_steps", "1", output_dir=out
    )
    assert "wall-time budget" in result.stderr
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    rates = [entry["learning_rate"] for entry in history if "learning_rate" in entry]
    assert len(rates) < 100000 and max(rates) > 1e-4
    assert rates[-1] < 0.05 * max(rates), "the schedule did not anneal within the budget"
    assert "test_exact_match" in results_of(out)  # still evaluated and saved
    # The bar's ETA is the budget's: it counted to about the steps the budget allowed, not to the plan's 100,000.
    training_bar = result.stderr[: result.stderr.index("wall-time budget")]
    done, total = map(int, re.findall(r"(\d+)/(\d+) \[", training_bar)[-1])
    assert 0 < done <= total <= 1.5 * len(rates), (done, total, len(rates))


def test_a_diverging_run_stops_with_a_clear_error_before_saving_nan_weights(tmp_path):
    # A learning rate of 1e30 sends every weight to ~1e30 in the first update; the second step's gradients are NaN.
    result = run_train(
        *TINY, "--max_steps", "10", "--warmup_steps", "0", "--learning_rate", "1e30", "--save_steps", "1",
        output_dir=tmp_path, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0 and "training diverged at step 2" in result.stderr, result.stderr[-1500:]
    assert "Traceback" not in result.stderr
    assert (tmp_path / "checkpoint-1").is_dir() and not (tmp_path / "checkpoint-2").exists()
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "all_results.json").exists()
