"""Per-cell supervision of the image tokens (`train.py --cell_loss_weight`; on in the questions job).

The questions job's colour errors are binding errors: "what colour is the cross?" answered with another group's
colour, because the answer's attention, keyed by a shape, does not pick the asked object's token out sharply enough
(README, Questions). A dataset that knows what each cell of its image grid holds (the built-in scenes: a 4 x 4 grid,
one image token per cell) can say so in a `cells` column, and training then also asks each image token, through a
linear head, for its own cell's attributes (colour, shape and size, or "empty"). That makes the attributes separable
in the tokens, where a key projection can match them.

The head is for training only: train.py attaches it to the model as `cell_head` (so the optimiser, gradient
clipping and checkpoints treat it as the model's own, and a resumed run goes on exactly) and removes it before the
model is saved. A checkpoint-N folder still holds it: `from_pretrained` lists those weights as unexpected and skips
them.
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


def attach(model, classes: tuple[int, ...]) -> None:
    setattr(model, HEAD, CellHead(model.config.text_config.n_embd, classes))


def detach(model) -> None:
    if hasattr(model, HEAD):
        delattr(model, HEAD)


def cell_loss(model, outputs, cell_labels: torch.Tensor) -> torch.Tensor:
    """The head's loss on the image tokens of a forward pass's `outputs` (the summary token, which has no cell, left
    out)."""
    tokens = outputs.image_outputs.pooler_output
    if model.image_summary_token is not None:
        tokens = tokens[:, :-1]
    return getattr(model, HEAD).loss(tokens, cell_labels)
