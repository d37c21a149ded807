"""The attention masks GPT-2 reads the image prefix with.

Packing: several tasks on one image in one sequence, [image prefix, task 1, task 2, ...], each task attending to the
image and to itself only (a block attention mask) at the positions it would have alone. Training an image's caption
and its questions as separate rows reads the image (vision tower and prefix tokens) once per row; packed, once per
image. Row by row the logits are those of the separate rows (tests/test_prompting.py checks it), so the loss is the
same, for less compute.

Isolated image tokens (`VitGpt2Config.isolate_image_tokens`): inside GPT-2 each of the image's tokens attends to
itself only, so that one cell's token never takes in another's object; the text after them reads them all.
"""

import torch

IMAGE = 0  # the segment id of the prefix: every task attends to it


def causal_attention(mask: torch.Tensor, queries: int | None = None, isolated_tokens: int = 0) -> torch.Tensor:
    """(batch, 1, queries, keys) bool, True where the last `queries` (default: all) of the tokens attend: causal over
    the real tokens of `mask` (batch, keys), except that the first `isolated_tokens` real ones (isolated image tokens)
    attend to themselves only. A padding token attends to itself, so that no row is empty (which would give NaNs)."""
    real = mask.bool()
    keys = real.shape[1]
    queries = keys if queries is None else queries
    key_index = torch.arange(keys, device=real.device)
    query_index = key_index[keys - queries :, None]
    allowed = (key_index <= query_index) & real[:, None, :]
    isolated = real & (real.long().cumsum(-1) <= isolated_tokens)
    allowed &= ~(isolated[:, keys - queries :, None] & isolated[:, None, :])
    allowed |= key_index == query_index
    return allowed[:, None]


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool attention mask as the additive one GPT-2 takes in any attention implementation."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def pack_tasks(prefix, prefix_mask, embed, prompt_ids, prompt_mask, labels, target_input_ids, isolated_tokens=0):
    """GPT-2's inputs for `tasks` tasks per image.

    Args:
        prefix: (images, prefix tokens, width) image prefix embeddings; prefix_mask: (images, prefix tokens) or None.
        embed: the token embedding.
        prompt_ids, prompt_mask: (images, tasks, prompt tokens), left-padded; None when no task has a prompt.
        labels: (images, tasks, target tokens), -100 after each target's end (a task slot with no target is unused).
        target_input_ids: what is read in the targets' place, same shape as labels.
        isolated_tokens: the prefix's first this many tokens attend to themselves only (isolated image tokens).

    Returns inputs_embeds (images, length, width), a 4-D additive attention mask (images, 1, length, length),
    position_ids, labels and which tokens are real (images, length): real tokens first, padding at the end.
    """
    images, tasks = labels.shape[:2]
    device = prefix.device
    in_target = labels != -100
    if prompt_ids is None:
        prompt_ids = torch.zeros((images, tasks, 0), dtype=torch.long, device=device)
        prompt_mask = prompt_ids
    prompt_mask = prompt_mask.to(device).bool()
    # The first token of a target is predicted from the token just before it: the end of its prompt, or, for a task
    # without one (a caption), the image's last token, which only the first task follows.
    if (in_target[:, 1:].any(-1) & ~prompt_mask[:, 1:].any(-1)).any():
        raise ValueError("only an image's first task may go without a prompt (a caption); put it first")
    if prefix_mask is None:
        prefix_mask = torch.ones(prefix.shape[:2], dtype=torch.bool, device=device)
    prefix_mask = prefix_mask.to(device).bool()

    task_tokens = torch.cat([prompt_ids.to(device), target_input_ids.to(device)], dim=-1)
    task_mask = torch.cat([prompt_mask, in_target], dim=-1)
    task_labels = torch.cat([torch.full_like(prompt_ids, -100, device=device), labels], dim=-1)
    # Each task's positions continue the image's, as if it were alone after it.
    task_positions = prefix_mask.sum(-1)[:, None, None] + task_mask.cumsum(-1) - 1
    task_segments = torch.arange(1, tasks + 1, device=device)[None, :, None].expand_as(task_mask)

    embeds = torch.cat([prefix, embed(task_tokens.flatten(1)).to(prefix.dtype)], dim=1)
    mask = torch.cat([prefix_mask, task_mask.flatten(1)], dim=1)
    positions = torch.cat([prefix_mask.cumsum(-1) - 1, task_positions.flatten(1)], dim=1).clamp(min=0)
    segments = torch.cat([torch.full_like(prefix_mask, IMAGE, dtype=torch.long), task_segments.flatten(1)], dim=1)
    targets = torch.cat([torch.full(prefix_mask.shape, -100, device=device), task_labels.flatten(1)], dim=1)

    # Real tokens first, in order, padding after; then drop the columns that are padding in every row.
    order = torch.argsort(~mask, dim=1, stable=True)[:, : int(mask.sum(-1).max())]
    embeds = embeds.gather(1, order[..., None].expand(-1, -1, embeds.shape[-1]))
    mask, positions, segments, targets = (tensor.gather(1, order) for tensor in (mask, positions, segments, targets))

    query, key = segments[:, :, None], segments[:, None, :]
    causal = torch.ones(order.shape[1], order.shape[1], dtype=torch.bool, device=device).tril()
    allowed = causal & mask[:, None, :] & ((key == IMAGE) | (key == query))
    isolated = (segments == IMAGE) & mask & (positions < isolated_tokens)
    allowed &= ~(isolated[:, :, None] & isolated[:, None, :])
    allowed |= torch.eye(order.shape[1], dtype=torch.bool, device=device)  # padding attends to itself: no empty rows
    return embeds, additive(allowed[:, None], embeds.dtype), positions, targets, mask
