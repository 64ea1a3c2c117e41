"""CudaGraphed: one replayed graph per frame gives the same flow and logits as the eager computation."""

from __future__ import annotations

import pytest
import torch

from wsvs_ros.cuda_graph import CudaGraphed
from wsvs_ros.flow import TorchFlow

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def pair(h: int, w: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(h * w)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=g) * 255, size=(h, w),
                                           mode="bicubic", align_corners=False)  # fmt: skip
    return base.to(device), torch.roll(base, shifts=(1, 2), dims=(2, 3)).to(device)


def test_cpu_inputs_run_eagerly() -> None:
    calls = []
    graphed = CudaGraphed(lambda a, b: calls.append(1) or b - a)
    prev, cur = pair(32, 48, "cpu")
    assert torch.equal(graphed(prev, cur), cur - prev) and calls == [1]


@needs_cuda
def test_graph_replay_equals_eager_torch_flow_and_recaptures_on_a_new_size() -> None:
    flow = TorchFlow(warps=2, iterations=5)
    graphed = CudaGraphed(flow)
    for h, w in ((64, 96), (64, 96), (48, 80)):
        prev, cur = pair(h, w, "cuda")
        expected = flow(prev, cur)
        got = graphed(prev, cur)
        assert got.shape == (1, 2, h, w)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    prev, cur = pair(48, 80, "cuda")
    kept = graphed(prev, cur)
    graphed(cur, prev)  # the replay overwrites the graph's buffers; a flow already returned must not change
    torch.testing.assert_close(kept, flow(prev, cur), rtol=1e-4, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize("backbone", ["vgg16", "efficientnet_lite0"])
def test_graphed_network_gives_the_eager_logits(backbone: str) -> None:
    from conftest import tiny_spec

    from wsvs_ros.engine import TorchEngine
    from wsvs_ros.model.checkpoint import build_model

    width = 1 / 32 if backbone == "vgg16" else 1.0
    spec = tiny_spec(input_width=128, input_height=64, backbone=backbone, width=width)
    model = build_model(spec)
    if backbone == "efficientnet_lite0":  # its from-scratch logits are ~1e-8, which any tolerance would pass
        from wsvs_ros.labels import DRIVE
        from wsvs_ros.model.efficientnet_init import load_efficientnet_lite0_weights

        load_efficientnet_lite0_weights(model, label_set=DRIVE)
    eager = TorchEngine(model, device="cuda", half=False)
    graphed = TorchEngine(model, device="cuda", half=False, cuda_graph=True)
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        rgb = torch.randn(1, 3, 64, 128, generator=g).cuda()
        flow = torch.randn(1, 2 * spec.flow_length, 64, 128, generator=g).cuda()
        torch.testing.assert_close(graphed.infer(rgb, flow), eager.infer(rgb, flow), rtol=1e-4, atol=1e-4)
