"""Per-cell supervision of the image tokens (`train.py --cell_loss_weight`; on in the questions job).

The questions job's colour errors are binding errors: "what colour is the cross?" answered with another group's
colour, because the answer's attention, keyed by a shape, does not pick the asked object's token out sharply enough
(README, Questions). A dataset that knows what each cell of its image grid holds (the built-in scenes: a 4 x 4 grid,
one image token per cell) can say so in a `cells` column, and training then also asks each image token, through a
linear head, for its own cell's attributes (colour, shape, size and how many objects its group has, or "empty"). That
makes the attributes separable in the tokens, where a key projection can match them; the count turns "how many red
circles?" into the same lookup.

A model with a caption mixer (config caption_mixer_layers) is also asked, through a second head on the mixed tokens
the captions read, how each object's group stands to the other group (the fifth attribute of `cells`: "left of",
"right of", "above", "below", or the only group; empty cells left out). That is the captions' one decision no single
cell shows ("above" or "left of"?), and a mixer not asked for it does not learn it (docs/questions-experiments.md).
Without a mixer the fifth attribute is not asked: asked of the plain tokens the questions read, it cost them colour.

The heads are for training only: train.py attaches them to the model as `cell_head` and `cell_relation_head` (so
the optimiser, gradient clipping and checkpoints treat them as the model's own, and a resumed run goes on exactly)
and removes them before the model is saved. A checkpoint-N folder still holds them: `from_pretrained` lists those
weights as unexpected and skips them.
"""

import torch
from torch import nn

from ..data.loading import CELLS_COLUMN

HEAD = "cell_head"


class CellHead(nn.Module):
    """A linear classifier of each image token's cell: one softmax per attribute, `classes[i]` classes each."""

    def __init__(self, width: int, classes: tuple[int, ...]):
        super().__init__()
        self.classes = list(classes)
        self.linear = nn.Linear(width, sum(classes))

    def loss(self, image_tokens: torch.Tensor, cell_labels: torch.Tensor) -> torch.Tensor:
        """image_tokens: (images, cells, width), the projected image tokens in the grid's order; cell_labels: (images,
        cells, attributes). The mean over attributes of each attribute's cross-entropy over all cells."""
        if image_tokens.shape[1] != cell_labels.shape[1]:
            raise ValueError(
                f"--cell_loss_weight: the dataset's `{CELLS_COLUMN}` label {cell_labels.shape[1]} cells, but the model "
                f"reads an image as {image_tokens.shape[1]} tokens; the image size over the patch size must give one "
                "token per cell (the built-in scenes: 64 / 16 for their 4 x 4 grid)"
            )
        logits = self.linear(image_tokens.float()).split(self.classes, dim=-1)
        losses = [
            nn.functional.cross_entropy(part.flatten(0, 1), labels.flatten())
            for part, labels in zip(logits, cell_labels.unbind(-1))
        ]
        return sum(losses) / len(losses)


RELATION_HEAD = "cell_relation_head"
HELD = 4  # the attributes of what a cell holds: colour, shape, size and its group's count; a fifth is the relation


def attach(model, classes: tuple[int, ...]) -> None:
    width = model.config.text_config.n_embd
    if model.caption_mixer is not None and len(classes) > HELD:
        setattr(model, RELATION_HEAD, CellHead(width, classes[HELD : HELD + 1]))
    setattr(model, HEAD, CellHead(width, classes[:HELD]))


def detach(model) -> None:
    for head in (HEAD, RELATION_HEAD):
        if hasattr(model, head):
            delattr(model, head)


def cell_loss(model, outputs, cell_labels: torch.Tensor) -> torch.Tensor:
    """The heads' loss on the image tokens of a forward pass's `outputs` (the summary token, which has no cell, left
    out): each attribute's cross-entropy at a third (the weight colour, shape and size had when they were all), the
    relation's on the caption mixer's tokens included."""
    tokens = outputs.image_outputs.pooler_output
    if model.image_summary_token is not None:
        tokens = tokens[:, :-1]
    relation_loss = None
    if hasattr(model, RELATION_HEAD):
        relation = cell_labels[..., HELD : HELD + 1].masked_fill(cell_labels[..., :1] == 0, -100)  # objects only
        relation_loss = getattr(model, RELATION_HEAD).loss(outputs.caption_prefix[:, :-1], relation)
    held = cell_labels[..., :HELD]
    loss = getattr(model, HEAD).loss(tokens, held) * held.shape[-1] / 3
    return loss if relation_loss is None else loss + relation_loss / 3
