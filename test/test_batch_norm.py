"""Batch norm while training, folded away in what is saved (`wsvs_training.batch_norm`, `batch_norm: true`)."""

from __future__ import annotations

import pytest
import torch

from wsvs_ros.model.two_stream import TwoStreamNet
from wsvs_training.batch_norm import ConvBatchNorm, add_batch_norm, fold_batch_norm
from wsvs_training.train import disable_flow_stream


def trained_batch_norm_net(dtype: torch.dtype) -> TwoStreamNet:
    """A tiny net with batch norm after a few steps, so running statistics and affine parameters are not trivial."""
    torch.manual_seed(0)
    model = TwoStreamNet(3, flow_length=2, width=1 / 16, output_stride=8).to(dtype)
    add_batch_norm(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        rgb, flow = 3 * torch.randn(2, 3, 32, 64, dtype=dtype) + 1, torch.randn(2, 4, 32, 64, dtype=dtype)
        model(rgb, flow).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folded_net_computes_what_the_batch_norm_net_computes_at_inference(dtype: torch.dtype) -> None:
    model = trained_batch_norm_net(dtype)
    bn = next(m.bn for m in model.modules() if isinstance(m, ConvBatchNorm))
    assert bn.running_var is not None and not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    folded = fold_batch_norm(model).eval()
    rgb, flow = torch.randn(1, 3, 32, 64, dtype=dtype), torch.randn(1, 4, 32, 64, dtype=dtype)
    with torch.no_grad():
        expected = model(rgb, flow)
        torch.testing.assert_close(folded(rgb, flow), expected)
    assert not any(isinstance(m, (ConvBatchNorm, torch.nn.BatchNorm2d)) for m in folded.modules())
    # the copy has the plain network's layout, and the model being trained keeps its batch norms
    assert (
        folded.state_dict().keys() == TwoStreamNet(3, flow_length=2, width=1 / 16, output_stride=8).state_dict().keys()
    )
    assert sum(isinstance(m, ConvBatchNorm) for m in model.modules()) == 26


def test_single_stream_with_batch_norm_still_ignores_the_flow() -> None:
    model = TwoStreamNet(3, flow_length=2, width=1 / 16, output_stride=8)
    add_batch_norm(model)
    disable_flow_stream(model)
    rgb, flow = torch.randn(2, 3, 32, 64), torch.randn(2, 4, 32, 64)
    for mode in (model.train, model.eval):  # batch statistics, then running ones
        mode()
        torch.manual_seed(0)  # the same dropout masks
        a = model(rgb, flow)
        torch.manual_seed(0)
        torch.testing.assert_close(a, model(rgb, torch.zeros(2, 4, 32, 64)))
