"""Questions as training data: the built-in visual questions, prompt columns in train.py, answer accuracy, and
Seq2SeqTrainer evaluation that generates from image + prompt without seeing the answer."""

import json
import re
from collections import Counter

import datasets
import pytest
import yaml
from conftest import CAPTIONS, TINY, distinct_images, evaluation_trainer, results_of, run_train, tiny_model
from safetensors import safe_open

from modeling_vitgpt2.data import shapes
from modeling_vitgpt2.data.shapes import (
    BACKGROUND,
    COLOURS,
    GRID,
    INVERSE_RELATION,
    QUESTION_TYPES,
    SHAPES,
    UNSEEN_COMBINATIONS,
    load_shapes_dataset,
    load_shapes_vqa_dataset,
)
from modeling_vitgpt2.metrics.answer_accuracy import answer_accuracy, normalise_answer

SIZES = dict(train_size=400, eval_size=60, image_size=64, seed=7)


@pytest.fixture(scope="module")
def vqa():
    return load_shapes_vqa_dataset(**SIZES)


def singular(word: str) -> str:
    return word[:-2] if word.endswith("sses") else word if word.endswith("ss") else word.removesuffix("s")


def check_answer(kind: str, question: str, answer: str, caption: str) -> None:
    """The answer, read back from the scene's caption (written by other code than the questions)."""
    groups = re.findall(r"(a|two|three) (small|large) (\w+) (\w+)", caption)
    found = {(colour, singular(shape)): (count, size) for count, size, colour, shape in groups}
    words = re.sub(r"[?]", "", question).split()
    if kind == "count":
        colour, shape = words[2], singular(words[3])
        assert {"a": "one"}.get(found[(colour, shape)][0], found[(colour, shape)][0]) == answer
    elif kind == "size":
        colour, shape = words[-2], singular(words[-1])
        assert found[(colour, shape)][1] == answer
    elif kind == "colour":
        shape = singular(words[-1])
        assert [c for c, s in found if s == shape] == [answer]
    elif kind == "shape":
        colour = words[-2]
        assert [s for c, s in found if c == colour] == [answer]
    elif kind == "yesno":
        assert words[2] == ("an" if words[3][0] in "aeiou" else "a")
        assert ((words[3], words[4]) in found) == (answer == "yes")
    else:  # relation: "what is <relation> the <colour> <shape>?" against "<A> <relation> <B>" in the caption
        relation, (colour, shape) = " ".join(words[2:-3]), words[-2:]
        first, written, second = re.match(r"(.+?) (left of|right of|above|below) (.+)", caption).groups()
        subject = " ".join(answer.split())
        if f"{colour} {shape}" in second and relation == written:
            assert subject in first
        else:
            assert f"{colour} {shape}" in first and relation == INVERSE_RELATION[written] and subject in second


def scenes_of(split) -> list[tuple[str, list]]:
    """(caption, [(type or None, question, answer)]) per scene: a training row holds a scene's tasks as aligned lists
    (the caption first, with an empty prompt); an evaluation split has a row per task, the caption's first."""
    if "question_type" not in split.column_names:
        return [(row["captions"][0], [(None, p, a) for p, a in zip(row["prompt"], row["captions"]) if p])
                for row in split]  # fmt: skip
    scenes = []
    for row in split:
        if row["question_type"] == "caption":
            scenes.append((row["captions"][0], []))
        else:
            scenes[-1][1].append((row["question_type"], row["prompt"], row["captions"][0]))
    return scenes


def question_type(question: str) -> str:
    starts = {"how many": "count", "what size": "size", "what colour": "colour", "what shape": "shape",
              "is there": "yesno", "what is": "relation"}  # fmt: skip
    return next(kind for start, kind in starts.items() if question.startswith(start))


def test_every_answer_agrees_with_its_scene(vqa):
    checked = 0
    for split in vqa.values():
        for caption, questions in scenes_of(split):
            for kind, prompt, answer in questions:
                question = prompt[len("Question: ") : -len(" Answer:")]
                assert kind in (None, question_type(question))
                check_answer(question_type(question), question, answer, caption)
                checked += 1
    assert checked > 1000


def test_same_scenes_as_the_caption_data_and_deterministic(vqa):
    captions = load_shapes_dataset(**SIZES)
    for split in captions:
        firsts = [caption for caption, _ in scenes_of(vqa[split])]
        assert firsts == [c[0] for c in captions[split]["captions"]]
        rows = vqa[split] if split == "train" else vqa[split].filter(lambda row: row["question_type"] == "caption")
        raw = [r["bytes"] for r in rows.cast_column("image", datasets.Image(decode=False))["image"]]
        expected = [r["bytes"] for r in captions[split].cast_column("image", datasets.Image(decode=False))["image"]]
        assert raw == expected
    again = load_shapes_vqa_dataset(**SIZES)
    assert list(again["train"]["prompt"]) == list(vqa["train"]["prompt"])
    assert list(again["test"]["captions"]) == list(vqa["test"]["captions"])


def test_training_draws_half_captions_half_questions_of_every_type(vqa):
    prompts = [prompt for row in vqa["train"]["prompt"] for prompt in row]
    assert sum(not prompt for prompt in prompts) == len(prompts) // 2  # caption_share 0.5
    types = {question_type(prompt[len("Question: ") :]) for prompt in prompts if prompt}
    assert types == set(QUESTION_TYPES)
    # Every scene's "no"s include one that names a colour or a shape the scene has: colour alone or shape alone
    # cannot answer it.
    near_misses = 0
    for caption, questions in scenes_of(vqa["train"]):
        words = {singular(word) for word in caption.split()}
        nos = [question.split()[-3:-1] for _, question, answer in questions if answer == "no"]
        near_misses += any(colour in words or shape.rstrip("?") in words for colour, shape in nos)
    assert near_misses >= 0.95 * len(vqa["train"])
    shares = load_shapes_vqa_dataset(**{**SIZES, "caption_share": 2 / 3})["train"]["prompt"]
    assert sum(not prompt for row in shares for prompt in row) == 2 * sum(
        bool(prompt) for row in shares for prompt in row
    )


def test_cells_say_what_each_grid_cell_of_the_image_holds(vqa):
    """The per-cell loss's labels, read back from the pixels (each cell's 16 x 16 block holds its object's colour and
    nothing else, an empty one only the background) and from the caption (the objects it counts)."""
    colours, shape_names, sizes = list(COLOURS), list(SHAPES), list(shapes.SIZES)
    for row in vqa["train"].select(range(100)):
        image, cells, side = row["image"].convert("RGB"), row["cells"], 64 // GRID
        assert len(cells) == GRID * GRID
        for index, (colour, shape, size) in enumerate(cells):
            top, left = divmod(index, GRID)
            block = image.crop((left * side, top * side, (left + 1) * side, (top + 1) * side))
            present = {rgb for _, rgb in block.getcolors()} - {BACKGROUND}
            assert present == ({COLOURS[colours[colour - 1]]} if colour else set()), (row["captions"][0], index)
            assert (colour == 0) == (shape == 0) == (size == 0)
        groups = re.findall(r"(a|two|three) (small|large) (\w+) (\w+)", row["captions"][0])
        counted = Counter()
        for count, size, colour, shape in groups:
            counted[(colour, singular(shape), size)] += {"a": 1, "two": 2, "three": 3}[count]
        labelled = Counter(
            (colours[colour - 1], shape_names[shape - 1], sizes[size - 1]) for colour, shape, size in cells if colour
        )
        assert labelled == counted


def test_splits_ask_every_type_and_held_out_pairs_stay_out_of_training(vqa):
    held_out = [f"{colour} {shape}" for colour, shape in UNSEEN_COMBINATIONS]
    training_text = " | ".join(
        text for column in ("prompt", "captions") for row in vqa["train"][column] for text in row
    )
    assert not [pair for pair in held_out if pair in training_text]
    for split in ("validation", "test", "test_unseen"):
        assert set(vqa[split]["question_type"]) == {"caption", *QUESTION_TYPES}
    unseen = vqa["test_unseen"].filter(lambda row: row["question_type"] in ("count", "size", "shape"))
    about_held_out = sum(any(pair.split()[0] in p and pair.split()[1] in p + " ".join(c) for pair in held_out)
                         for p, c in zip(unseen["prompt"], unseen["captions"]))  # fmt: skip
    assert about_held_out / len(unseen) > 0.9
    answers = {answer[0] for answer in vqa["test"]["captions"]}
    assert {"yes", "no", "one", "two"} <= answers and set(COLOURS) & answers and set(SHAPES) & answers


def test_answer_accuracy_normalises_and_splits_by_type():
    assert normalise_answer("Two.") == normalise_answer("2") == "2"
    assert normalise_answer("the Red circle!") == "red circle"
    scores = answer_accuracy(
        ["Two.", "a red circle", "yes", "blue"], [["2"], ["red circle"], ["no"], ["green", "blue"]],
        ["count", "relation", "yesno", "colour"],
    )  # fmt: skip
    assert scores == {
        "answer_accuracy": 0.75,
        "answer_accuracy_count": 1.0,
        "answer_accuracy_relation": 1.0,
        "answer_accuracy_yesno": 0.0,
        "answer_accuracy_colour": 1.0,
    }


def test_seq2seq_trainer_evaluation_generates_from_image_and_prompt_only(tokenizer, processor, tmp_path):
    model = tiny_model(tokenizer, seed=8)
    images = distinct_images(6)
    prompts = ["a red", "", "two small blue squares", "three", "", "an orange square"]

    def predictions(targets):
        data = datasets.Dataset.from_dict({"image": images, "prompt": prompts, "captions": [[t] for t in targets]})
        return processor.batch_decode(evaluation_trainer(model, processor, tmp_path).predict(data).predictions)

    right, wrong = predictions(CAPTIONS[:6]), predictions(CAPTIONS[2:8])
    assert right == wrong
    direct = []
    for image, prompt in zip(images, prompts):
        direct += processor.batch_decode(model.generate(**processor(images=image, text=prompt), max_new_tokens=8))
    assert right == direct


def test_train_py_on_builtin_questions(vqa_run):
    out, result = vqa_run
    metrics = results_of(out)
    for split in ("test", "test_unseen", "eval"):
        assert f"{split}_exact_match" in metrics  # caption metrics over the caption rows
        assert 0 <= metrics[f"{split}_answer_accuracy"] <= 1
        assert {f"{split}_answer_accuracy_{kind}" for kind in QUESTION_TYPES} <= set(metrics)
    assert "answers_count" in result.stdout  # the printed table
    assert "Question: " in result.stdout  # sample answers printed beside their questions
    assert json.loads((out / "config.json").read_text())["isolate_image_tokens"]  # the questions job's default
    # The per-cell head (on by default here) trains with the model and is in its checkpoints, not in the model.
    assert not [key for key in safe_open(out / "model.safetensors", "pt").keys() if key.startswith("cell_head.")]
    checkpoint = safe_open(out / "checkpoint-20" / "model.safetensors", "pt")
    assert {"cell_head.linear.weight", "cell_head.linear.bias"} <= set(checkpoint.keys())


def test_the_per_cell_loss_is_added_to_the_training_loss(tmp_path):
    """Same data, same initialisation: the first step's loss with the per-cell loss is the language-model loss plus
    about the cross-entropy of guessing (mean of ln 9, ln 6 and ln 3 for colour, shape and size: 1.7)."""
    common = [*TINY, "--builtin_train_size", "64", "--max_steps", "1", "--logging_steps", "1", "--eval_split", "",
              "--test_splits", ""]  # fmt: skip
    questions = [*common, "--dataset", "builtin:shapes-vqa"]
    losses = {}
    for weight in ("0", "1"):
        run_train(*questions, "--cell_loss_weight", weight, output_dir=tmp_path / weight)
        history = json.loads((tmp_path / weight / "trainer_state.json").read_text())["log_history"]
        losses[weight] = next(entry["loss"] for entry in history if "loss" in entry)
    assert 1.0 < losses["1"] - losses["0"] < 3.0, losses

    refused = run_train(*common, "--cell_loss_weight", "1", output_dir=tmp_path / "captions", check=False)
    assert refused.returncode != 0 and "needs training data with a `cells` column" in refused.stderr
    other_grid = run_train(*questions, "--scratch_image_size", "32", output_dir=tmp_path / "grid", check=False)
    assert other_grid.returncode != 0 and "16 cells, but the model reads an image as 4 tokens" in other_grid.stderr


def test_a_questions_run_shows_its_answers_on_the_model_card(vqa_run, tmp_path):
    """The run keeps test scenes with questions beside its captions, each with the answer the model gives to exactly
    that image and prompt; the exported card shows them, and the Hub widget (image alone) only the captions."""
    from transformers import pipeline

    from modeling_vitgpt2.hub.export import export

    out = vqa_run[0]
    examples = json.loads((out / "examples" / "examples.json").read_text())
    asked = [example for example in examples if example["prompt"]]
    assert len(asked) == 4 and len(examples) == 8 and len({example["prompt"] for example in asked}) > 1
    answerer = pipeline("image-to-text", model=str(out), trust_remote_code=True)
    for example in examples:
        generated = answerer(str(out / example["file"]), prompt=example["prompt"])[0]["generated_text"]
        assert generated == example["caption"], example

    card = (export(out, tmp_path / "hub") / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    captions = [example["caption"] for example in examples if not example["prompt"]]
    assert [widget["output"]["text"] for widget in meta["widget"]] == captions
    for example in asked:
        assert f"| ![]({example['file']}) | {example['prompt']} | {example['caption']} |" in card


def test_train_py_prompt_column_and_fixed_prompt(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    for index, image in enumerate(distinct_images(8)):
        image.save(folder / f"{index}.png")
        rows.append({"file": f"{index}.png", "question": "what is it?", "answer": CAPTIONS[index]})
    (folder / "qa.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    common = ["--dataset", folder / "qa.jsonl", "--image_column", "file", "--caption_column", "answer",
              "--eval_split", "", "--test_splits", "", "--max_steps", "3", "--scratch_width", "32",
              "--scratch_layers", "1"]  # fmt: skip
    run_train(*common, "--prompt_column", "question", output_dir=tmp_path / "column")
    run_train(*common, "--prompt", "a photo of", output_dir=tmp_path / "fixed")
    clash = run_train(*common, "--prompt_column", "question", "--prompt", "x", output_dir=tmp_path / "both",
                      check=False)  # fmt: skip
    assert clash.returncode != 0 and "--prompt and --prompt_column" in clash.stderr
    missing = run_train(*common, "--prompt_column", "nope", output_dir=tmp_path / "missing", check=False)
    assert missing.returncode != 0 and "no prompt column 'nope'" in missing.stderr
    model_dir = tmp_path / "column"
    tokens = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    assert any("what" in token for token in tokens)  # the from-scratch tokenizer learned the prompts' words too
