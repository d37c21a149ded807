"""On a CUDA GPU only (skipped elsewhere, CI included): a padded batch trains to finite gradients under bf16.

A batch padded first (short lines beside long ones, or short prompts) has query rows that attend to nothing. On
H100/H200 with PyTorch >= 2.11, cuDNN's attention backward turns such a batch of length 64 mod 128 into NaN gradients
(pytorch/pytorch#196678): the reading job's first GPU run went NaN before step 100 that way. The model trains such
batches on the other attention kernels."""

import pytest
import torch

from modeling_vitgpt2.data.reading.corpus import CHARSET
from modeling_vitgpt2.training.scratch import build_character_tokenizer, build_scratch_reader

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("target_length", [28, 92])  # with a 36-token image prefix: lengths 64 and 128
def test_padded_reader_batch_has_finite_gradients_under_bf16(target_length):
    torch.manual_seed(0)
    # Head size 64 and the failing batch's shape: lines of 256..576 px (16..36 prefix tokens) padded to 576.
    model = build_scratch_reader(build_character_tokenizer(CHARSET), text_width=128, text_layers=2, heads=2).cuda()
    widths = torch.tensor([256, 320, 416, 576] * 8, device="cuda")
    pixel_mask = (torch.arange(576, device="cuda") < widths[:, None]).long()
    pixel_values = torch.rand(len(widths), 1, 32, 576, device="cuda") * pixel_mask[:, None, None, :]
    labels = torch.randint(5, 90, (len(widths), target_length), device="cuda")
    labels[::2, target_length // 2 :] = -100  # short targets beside long ones, as in a real batch
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    bad = [name for name, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
    assert not bad, f"non-finite gradients in {bad[:5]}"
