"""ConvNeXt's depthwise convolution as the model builds it (modeling_vitgpt2.py, `_ConvNextDepthwiseConv2d`): on a
CPU in float32 its backward pass is computed from ordinary convolutions (`_DepthwiseConvolution`) and gives torch's
gradients; under bf16 autocast it trains exactly as before."""

import copy

import pytest
import torch
from torch import nn

from modeling_vitgpt2.data.reading.corpus import CHARSET
from modeling_vitgpt2.modeling_vitgpt2 import _ConvNextDepthwiseConv2d, _DepthwiseConvolution
from modeling_vitgpt2.training.scratch import build_character_tokenizer, build_scratch_reader


@pytest.mark.parametrize(
    "shape, kernel, padding",
    [
        ((2, 3, 4, 9), (7, 7), (3, 3)),  # the reader's: a map a few rows high
        ((2, 3, 1, 9), (7, 7), (3, 3)),
        ((2, 4, 5, 6), (3, 3), (1, 1)),
        ((1, 2, 6, 5), (5, 5), (2, 2)),
        ((2, 3, 3, 8), (3, 5), (1, 2)),
    ],
)
def test_gradients_equal_finite_differences_and_torchs(shape, kernel, padding):
    torch.manual_seed(0)
    channels = shape[1]
    weight = torch.randn(channels, 1, *kernel, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(channels, dtype=torch.float64, requires_grad=True)
    features = torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    def ours(features, weight, bias):
        return _DepthwiseConvolution.apply(features, weight, bias, padding)

    def torchs(features, weight, bias):
        return nn.functional.conv2d(features, weight, bias, 1, padding, 1, channels)

    assert torch.autograd.gradcheck(ours, (features, weight, bias))
    grad = torch.randn(*shape, dtype=torch.float64)
    inputs = (features, weight, bias)
    for mine, reference in zip(
        torch.autograd.grad(ours(*inputs), inputs, grad), torch.autograd.grad(torchs(*inputs), inputs, grad)
    ):
        torch.testing.assert_close(mine, reference)


def reader_and_torchs_copy():
    """A from-scratch reader, and a copy whose depthwise convolutions are torch's plain `nn.Conv2d`."""
    torch.manual_seed(0)
    reader = build_scratch_reader(build_character_tokenizer(CHARSET), text_width=32, text_layers=1, heads=1)
    plain = copy.deepcopy(reader)
    convolutions = [m for m in plain.modules() if isinstance(m, _ConvNextDepthwiseConv2d)]
    assert len(convolutions) == sum(reader.config.vision_config.depths)
    for convolution in convolutions:
        convolution.__class__ = nn.Conv2d
    torch.manual_seed(1)
    width = 96
    batch = {
        "pixel_values": torch.randn(3, 1, reader.config.line_height, width),
        "pixel_mask": torch.ones(3, width, dtype=torch.long),
        "labels": torch.randint(1, 40, (3, 6)),
    }
    return reader, plain, batch


def loss_and_gradients(model, batch, autocast: bool = False):
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def test_a_reader_trains_on_the_same_loss_and_gradients_as_with_torchs_convolution():
    reader, plain, batch = reader_and_torchs_copy()
    backward_functions = []
    for convolution in (m for m in reader.modules() if isinstance(m, _ConvNextDepthwiseConv2d)):
        convolution.register_forward_hook(lambda module, args, output: backward_functions.append(type(output.grad_fn)))
    (loss, gradients), (plain_loss, plain_gradients) = (loss_and_gradients(m, batch) for m in (reader, plain))
    assert {f.__name__ for f in backward_functions} == {"_DepthwiseConvolutionBackward"}  # the fast path trained
    assert torch.equal(loss, plain_loss)  # the forward pass is the ordinary convolution
    assert gradients.keys() == plain_gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, plain_gradients[name], rtol=1e-4, atol=1e-6, msg=name)


class Float32Conv2d(nn.Conv2d):
    """What the model's depthwise convolution did under CPU autocast before the fast path, and must still do."""

    def forward(self, hidden_states):
        with torch.autocast("cpu", enabled=False):
            return super().forward(hidden_states.float())


def test_bf16_autocast_trains_exactly_as_before():
    """CPUs with AMX train under bf16 autocast: there the convolution runs in float32 with torch's own backward."""
    reader, before, batch = reader_and_torchs_copy()
    for convolution in before.modules():
        if type(convolution) is nn.Conv2d and convolution.groups > 1:
            convolution.__class__ = Float32Conv2d
    (loss, gradients), (loss_before, gradients_before) = (
        loss_and_gradients(m, batch, autocast=True) for m in (reader, before)
    )
    assert torch.equal(loss, loss_before)
    for name, gradient in gradients.items():
        assert torch.equal(gradient, gradients_before[name]), name
