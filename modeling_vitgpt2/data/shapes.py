"""The built-in caption dataset: procedurally drawn scenes of coloured shapes with compositional captions.

Every scene is 1–3 objects in one or two groups. A group is 1–3 identical objects (same colour, shape and size);
two groups stand in a relation read off the final layout. Captions follow one grammar:

    "a small red circle"                       one object
    "three large blue squares"                 a group, with its count
    "a large green cross right of two small white diamonds"

Mention order is deterministic, so every image has exactly one right caption: with sizes that differ the large group
comes first, otherwise the group on the left (or on top). The relation is horizontal when the groups' columns do not
overlap, otherwise vertical; all four of left of / right of / above / below occur.

Objects sit in the cells of a 4×4 grid (with a little jitter), one object per cell. Splits: `train`, `validation`,
`test` (new scenes, every colour–shape combination seen in training) and `test_unseen` (every scene holds a
colour–shape combination that never occurs in training, so memorising combinations cannot pass).

`builtin:shapes-vqa` is the same scenes with visual questions beside the captions (`shapes_vqa` below): counts,
colour, shape, size, relation and yes/no existence, with one- or two-word answers, asked as
"Question: how many red circles are there? Answer:".
"""

import random

import datasets
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
    "cyan": (40, 210, 220),
    "white": (250, 250, 250),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SIZES = {"small": 0.55, "large": 0.9}  # fraction of a grid cell
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
GRID = 4
BACKGROUND = (90, 90, 90)
# One held-out shape per colour, each shape held out for some colour: every colour and shape is still seen.
UNSEEN_COMBINATIONS = frozenset((colour, SHAPES[(index * 2) % len(SHAPES)]) for index, colour in enumerate(COLOURS))
SEEN_COMBINATIONS = tuple((c, s) for c in COLOURS for s in SHAPES if (c, s) not in UNSEEN_COMBINATIONS)
GROUP_LAYOUTS = ((1,), (2,), (3,), (1, 1), (1, 2), (2, 1))  # objects per group: 1–3 objects in 1–2 groups


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, centre, radius: float, colour) -> None:
    x, y = centre
    r = radius
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle([x - s, y - s, x + s, y + s], fill=colour)
    elif shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=colour)
    else:  # cross
        w = r * 0.38
        draw.rectangle([x - r, y - w, x + r, y + w], fill=colour)
        draw.rectangle([x - w, y - r, x + w, y + r], fill=colour)


def describe_group(count: int, size: str, colour: str, shape: str) -> str:
    plural = "" if count == 1 else "es" if shape == "cross" else "s"
    return f"{COUNT_WORDS[count]} {size} {colour} {shape}{plural}"


def caption_for(groups) -> str:
    """groups: [(count, size, colour, shape, cells)], cells as (column, row); see the module docstring."""
    if len(groups) == 1:
        return describe_group(*groups[0][:4])
    first, relation, second = relation_of(groups)
    return f"{describe_group(*first[:4])} {relation} {describe_group(*second[:4])}"


def relation_of(groups) -> tuple:
    """(group mentioned first, "left of" / "right of" / "above" / "below", the other group) for two groups."""
    first, second = groups
    columns = [{column for column, _ in group[4]} for group in groups]
    horizontal = max(columns[0]) < min(columns[1]) or max(columns[1]) < min(columns[0])
    axis = 0 if horizontal else 1

    def position(group):
        return min(cell[axis] for cell in group[4])

    if first[1] == second[1]:  # same size: the left / top group first
        first, second = sorted(groups, key=position)
    elif first[1] != "large":
        first, second = second, first
    before = position(first) < position(second)
    relation = ("left of" if before else "right of") if horizontal else ("above" if before else "below")
    return first, relation, second


def make_scene(rng: random.Random, image_size: int, combinations) -> tuple[Image.Image, list]:
    """An image and its groups, [(count, size, colour, shape, cells)]."""
    layout = rng.choice(GROUP_LAYOUTS)
    kinds = rng.sample(combinations, len(layout))  # distinct colour-shape per group
    sizes = [rng.choice(list(SIZES)) for _ in layout]
    while len(layout) == 2 and (kinds[0], sizes[0]) == (kinds[1], sizes[1]):
        sizes[1] = rng.choice(list(SIZES))
    cells = [(column, row) for column in range(GRID) for row in range(GRID)]
    if len(layout) == 2:
        # Keep the two groups apart along one axis so that the relation is well defined.
        axis = rng.randrange(2)
        cut = rng.randrange(1, GRID)
        side_a = [cell for cell in cells if cell[axis] < cut]
        side_b = [cell for cell in cells if cell[axis] >= cut]
        if rng.random() < 0.5:
            side_a, side_b = side_b, side_a
        placements = [rng.sample(side_a, layout[0]), rng.sample(side_b, layout[1])]
    else:
        placements = [rng.sample(cells, layout[0])]

    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell_size = image_size / GRID
    groups = []
    for count, (colour, shape), size, group_cells in zip(layout, kinds, sizes, placements):
        radius = SIZES[size] * cell_size / 2
        slack = max(0.0, cell_size / 2 - radius - 0.5)
        for column, row in group_cells:
            centre = (
                (column + 0.5) * cell_size + rng.uniform(-slack, slack) - 0.5,
                (row + 0.5) * cell_size + rng.uniform(-slack, slack) - 0.5,
            )
            draw_shape(draw, shape, centre, radius, COLOURS[colour])
        groups.append((count, size, colour, shape, group_cells))
    return image, groups


def make_scenes(size: int, seed: int, image_size: int, unseen: bool, name: str = "") -> list:
    """`size` scenes as (image, groups); the same seed always draws the same scenes."""
    rng = random.Random(seed)
    scenes = []
    progress = tqdm(total=size, desc=f"drawing {name} scenes", unit="scene", disable=size < 2000)
    while len(scenes) < size:
        if unseen:
            # At least one group is a held-out combination; the other may be anything.
            held_out = rng.choice(sorted(UNSEEN_COMBINATIONS))
            others = [combo for combo in SEEN_COMBINATIONS + tuple(sorted(UNSEEN_COMBINATIONS)) if combo != held_out]
            image, groups = make_scene(rng, image_size, [held_out] + others)
            if not any(group[2:4] in UNSEEN_COMBINATIONS for group in groups):
                continue
        else:
            image, groups = make_scene(rng, image_size, SEEN_COMBINATIONS)
        scenes.append((image, groups))
        progress.update()
    progress.close()
    return scenes


def make_split(size: int, seed: int, image_size: int, unseen: bool, name: str = "") -> datasets.Dataset:
    scenes = make_scenes(size, seed, image_size, unseen, name)
    features = datasets.Features({"image": datasets.Image(), "captions": datasets.Sequence(datasets.Value("string"))})
    rows = {"image": [image for image, _ in scenes], "captions": [[caption_for(groups)] for _, groups in scenes]}
    return datasets.Dataset.from_dict(rows, features=features)


SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2, "test_unseen": 3}  # added to the seed


def load_shapes_dataset(
    train_size: int = 20000, eval_size: int = 500, image_size: int = 64, seed: int = 0
) -> datasets.DatasetDict:
    """The built-in dataset as a DatasetDict; the same seed always gives the same scenes."""
    return datasets.DatasetDict(
        {
            split: make_split(
                train_size if split == "train" else eval_size, seed + offset, image_size, split == "test_unseen", split
            )
            for split, offset in SPLIT_SEEDS.items()
        }
    )


# --- visual questions about the same scenes (builtin:shapes-vqa) ---------------------------------------------------
QUESTION_TYPES = ("count", "colour", "shape", "size", "relation", "yesno")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def question_prompt(question: str) -> str:
    return f"Question: {question} Answer:"


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def plural(shape: str, count: int) -> str:
    return shape if count == 1 else f"{shape}es" if shape == "cross" else f"{shape}s"


def questions_about(
    groups, rng: random.Random, allowed_combinations, near_misses: bool = False
) -> list[tuple[str, str, str, tuple]]:
    """Every question this scene answers unambiguously: (type, question, answer, the colour-shape it is about).

    `allowed_combinations` are the colour-shape pairs a "no" question may name (training never names held-out ones).
    `near_misses` adds a second "no" that names a present colour or shape (training: the "no"s a model gets wrong by
    checking the colour or the shape alone).
    """
    questions = []
    shapes = [group[3] for group in groups]
    colours = [group[2] for group in groups]
    for count, size, colour, shape, _ in groups:
        about = (colour, shape)
        things, verb = plural(shape, count), "is" if count == 1 else "are"
        questions.append(("count", f"how many {colour} {plural(shape, 2)} are there?", NUMBER_WORDS[count], about))
        questions.append(("size", f"what size {verb} the {colour} {things}?", size, about))
        if shapes.count(shape) == 1:
            questions.append(("colour", f"what colour {verb} the {things}?", colour, about))
        if colours.count(colour) == 1:
            objects = "object" if count == 1 else "objects"
            questions.append(("shape", f"what shape {verb} the {colour} {objects}?", shape, about))
        questions.append(("yesno", f"is there {article(colour)} {colour} {shape}?", "yes", about))
    absent = [combo for combo in allowed_combinations if combo not in {group[2:4] for group in groups}]
    # Half the "no" questions name a present colour or shape, so that colour alone or shape alone cannot answer.
    near = [combo for combo in absent if combo[0] in colours or combo[1] in shapes]
    absentees = [rng.choice(near if near and rng.random() < 0.5 else absent)]
    if near_misses and near:
        absentees.append(rng.choice(near))
    for colour, shape in dict.fromkeys(absentees):
        questions.append(("yesno", f"is there {article(colour)} {colour} {shape}?", "no", (colour, shape)))
    if len(groups) == 2:
        first, relation, second = relation_of(groups)
        for subject, word, other in ((first, relation, second), (second, INVERSE_RELATION[relation], first)):
            question = f"what is {word} the {other[2]} {plural(other[3], other[0])}?"
            questions.append(("relation", question, f"{subject[2]} {plural(subject[3], subject[0])}", subject[2:4]))
    return questions


def pick_questions(questions, rng: random.Random, prefer=frozenset()) -> list:
    """One question of each type the scene has; among a type's questions, those about a `prefer`red colour-shape
    pair first (test_unseen asks about the held-out pair)."""
    by_type = {}
    for question in questions:
        by_type.setdefault(question[0], []).append(question)
    chosen = []
    for kind in [kind for kind in QUESTION_TYPES if kind in by_type]:
        preferred = [question for question in by_type[kind] if question[3] in prefer]
        chosen.append(rng.choice(preferred or by_type[kind]))
    return chosen


def scene_cells(groups) -> list[list[int]]:
    """Each grid cell, row by row (the order of a ConvNeXt's last feature map's cells), as [colour, shape, size]
    indices into COLOURS, SHAPES and SIZES, 1-based ([0, 0, 0]: an empty cell), for training/cell_supervision.py."""
    cells = [[0, 0, 0] for _ in range(GRID * GRID)]
    for _, size, colour, shape, group_cells in groups:
        for column, row in group_cells:
            cells[row * GRID + column] = [
                1 + list(COLOURS).index(colour),
                1 + SHAPES.index(shape),
                1 + list(SIZES).index(size),
            ]
    return cells


def make_vqa_training_split(size: int, seed: int, image_size: int, caption_share: float) -> datasets.Dataset:
    """One row per training scene carrying all its tasks (`prompt` and `captions` as aligned lists): the caption
    (empty prompt) and every question the scene answers, near-miss "no"s included; the caption is listed often enough
    that `caption_share` of the draws of one task per row are captions (`--tasks_per_image` 1). Packed training
    (`--tasks_per_image` N) takes the caption and N-1 of the questions each epoch. `cells` says what each grid cell
    holds (`scene_cells`), for the per-cell loss."""
    if not 0 < caption_share < 1:
        raise ValueError(f"caption_share={caption_share}: a share strictly between 0 and 1")
    scenes = make_scenes(size, seed, image_size, unseen=False, name="train")
    rng = random.Random(f"questions-{seed}")  # its own stream: the scenes are those of builtin:shapes
    rows = {"image": [], "prompt": [], "captions": [], "cells": []}
    for image, groups in scenes:
        rows["cells"].append(scene_cells(groups))
        questions = questions_about(groups, rng, SEEN_COMBINATIONS, near_misses=True)
        copies = max(1, round(len(questions) * caption_share / (1 - caption_share)))
        rows["image"].append(image)
        rows["prompt"].append([""] * copies + [question_prompt(question) for _, question, _, _ in questions])
        rows["captions"].append([caption_for(groups)] * copies + [answer for _, _, answer, _ in questions])
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "prompt": datasets.Sequence(datasets.Value("string")),
            "captions": datasets.Sequence(datasets.Value("string")),
            "cells": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
        }
    )
    return datasets.Dataset.from_dict(rows, features=features)


def make_vqa_split(size: int, seed: int, image_size: int, unseen: bool, name: str = "") -> datasets.Dataset:
    """An evaluation split's scenes, each as a caption row (empty prompt) and one question row per question type the
    scene has. Columns: image, prompt, captions (the target: caption or answer), question_type ("caption" for
    caption rows)."""
    scenes = make_scenes(size, seed, image_size, unseen, name)
    rng = random.Random(f"questions-{seed}")  # its own stream: the scenes are those of builtin:shapes
    allowed = [(c, s) for c in COLOURS for s in SHAPES]
    prefer = UNSEEN_COMBINATIONS if unseen else frozenset()
    rows = {"image": [], "prompt": [], "captions": [], "question_type": []}
    for image, groups in scenes:
        rows["image"].append(image)
        rows["prompt"].append("")
        rows["captions"].append([caption_for(groups)])
        rows["question_type"].append("caption")
        for kind, question, answer, _ in pick_questions(questions_about(groups, rng, allowed), rng, prefer):
            rows["image"].append(image)
            rows["prompt"].append(question_prompt(question))
            rows["captions"].append([answer])
            rows["question_type"].append(kind)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "prompt": datasets.Value("string"),
            "captions": datasets.Sequence(datasets.Value("string")),
            "question_type": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(rows, features=features)


def load_shapes_vqa_dataset(
    train_size: int = 20000, eval_size: int = 500, image_size: int = 64, seed: int = 0, caption_share: float = 0.5
) -> datasets.DatasetDict:
    """builtin:shapes-vqa: the scenes of `load_shapes_dataset` (same seed, same scenes), questions beside captions."""
    splits = {"train": make_vqa_training_split(train_size, seed + SPLIT_SEEDS["train"], image_size, caption_share)}
    for split, offset in SPLIT_SEEDS.items():
        if split != "train":
            splits[split] = make_vqa_split(eval_size, seed + offset, image_size, split == "test_unseen", split)
    return datasets.DatasetDict(splits)
