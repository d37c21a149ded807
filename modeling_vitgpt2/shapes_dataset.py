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
    return f"{describe_group(*first[:4])} {relation} {describe_group(*second[:4])}"


def make_scene(rng: random.Random, image_size: int, combinations) -> tuple[Image.Image, str]:
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
    return image, caption_for(groups)


def make_split(size: int, seed: int, image_size: int, unseen: bool, name: str = "") -> datasets.Dataset:
    rng = random.Random(seed)
    seen = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in UNSEEN_COMBINATIONS]
    images, captions = [], []
    progress = tqdm(total=size, desc=f"drawing {name} scenes", unit="scene", disable=size < 2000)
    while len(images) < size:
        if unseen:
            # At least one group is a held-out combination; the other may be anything.
            held_out = rng.choice(sorted(UNSEEN_COMBINATIONS))
            others = [combo for combo in seen + sorted(UNSEEN_COMBINATIONS) if combo != held_out]
            image, caption = make_scene(rng, image_size, [held_out] + others)
            if not any(f"{colour} {shape}" in caption for colour, shape in UNSEEN_COMBINATIONS):
                continue
        else:
            image, caption = make_scene(rng, image_size, seen)
        images.append(image)
        captions.append([caption])
        progress.update()
    progress.close()
    features = datasets.Features({"image": datasets.Image(), "captions": datasets.Sequence(datasets.Value("string"))})
    return datasets.Dataset.from_dict({"image": images, "captions": captions}, features=features)


def load_shapes_dataset(
    train_size: int = 20000, eval_size: int = 500, image_size: int = 64, seed: int = 0
) -> datasets.DatasetDict:
    """The built-in dataset as a DatasetDict; the same seed always gives the same scenes."""
    return datasets.DatasetDict(
        {
            "train": make_split(train_size, seed, image_size, unseen=False, name="train"),
            "validation": make_split(eval_size, seed + 1, image_size, unseen=False, name="validation"),
            "test": make_split(eval_size, seed + 2, image_size, unseen=False, name="test"),
            "test_unseen": make_split(eval_size, seed + 3, image_size, unseen=True, name="test_unseen"),
        }
    )
