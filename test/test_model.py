"""TwoStreamNet (paper 3.2, Fig. 3) and its VGG-16 initialisation (paper 4.2).

Width-1.0 nets are about 1 GB and seconds per forward on CPU: one module-scoped net serves the tests that need VGG-16's
exact shapes; everything else runs at width 1/16 or 1/32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TORCHVISION_VGG16_CONVS

from wsvs_ros.labels import CITYSCAPES, DRIVE
from wsvs_ros.model.two_stream import TwoStreamNet
from wsvs_ros.model.vgg_init import load_vgg16_weights

SMALL = 1 / 16


@pytest.fixture(scope="module")
def vgg16_net() -> TwoStreamNet:
    torch.manual_seed(0)
    return TwoStreamNet(len(CITYSCAPES), flow_length=10, width=1.0)


def small_net(
    num_classes: int = 5, *, flow_length: int = 3, width: float = SMALL, seed: int = 0, output_stride: int = 32
) -> TwoStreamNet:
    torch.manual_seed(seed)
    return TwoStreamNet(num_classes, flow_length=flow_length, width=width, output_stride=output_stride)


def inputs(net: TwoStreamNet, height: int, width: int, *, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    rgb = torch.randn(batch, 3, height, width, generator=generator)
    flow = torch.randn(batch, 2 * net.flow_length, height, width, generator=generator)
    return rgb, flow


@pytest.mark.slow
def test_width_one_is_vgg16_per_stream_and_gives_full_size_logits(vgg16_net: TwoStreamNet) -> None:
    vgg = [(out, inp, 3, 3) for out, inp in TORCHVISION_VGG16_CONVS.values()]
    assert [tuple(c.weight.shape) for c in vgg16_net.rgb_stream.convs] == vgg
    assert [tuple(c.weight.shape) for c in vgg16_net.flow_stream.convs] == [(64, 20, 3, 3), *vgg[1:]]
    assert all(c.padding == (1, 1) for c in (*vgg16_net.rgb_stream.convs, *vgg16_net.flow_stream.convs))
    assert tuple(vgg16_net.appearance_head.fc6.weight.shape) == (4096, 512, 7, 7)

    vgg16_net.eval()
    with torch.no_grad():
        for width, height in ((512, 256), (480, 360), (1024, 512)):
            logits = vgg16_net(*inputs(vgg16_net, height, width))
            assert logits.shape == (1, len(CITYSCAPES), height, width)
            assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_vgg16_file_initialises_both_streams_and_heads(
    vgg16_net: TwoStreamNet, vgg16_state: dict[str, torch.Tensor], vgg16_file: Path
) -> None:
    load_vgg16_weights(vgg16_net, vgg16_file, label_set=CITYSCAPES, generator=torch.Generator().manual_seed(3))

    keys = [f"features.{i}" for i in TORCHVISION_VGG16_CONVS]
    for i, (key, rgb_conv, flow_conv) in enumerate(
        zip(keys, vgg16_net.rgb_stream.convs, vgg16_net.flow_stream.convs, strict=True)
    ):
        assert torch.equal(rgb_conv.weight, vgg16_state[f"{key}.weight"])
        assert torch.equal(rgb_conv.bias, vgg16_state[f"{key}.bias"])
        assert torch.equal(flow_conv.bias, vgg16_state[f"{key}.bias"])
        if i > 0:
            assert torch.equal(flow_conv.weight, vgg16_state[f"{key}.weight"])
    # flow conv1_1: the RGB filters' channel mean, repeated over 2L = 20 channels, scaled by 3 / 20
    rgb_mean = vgg16_state["features.0.weight"].mean(dim=1, keepdim=True)
    torch.testing.assert_close(vgg16_net.flow_stream.convs[0].weight, rgb_mean.repeat(1, 20, 1, 1) * 3 / 20)

    mapped = [c for c in CITYSCAPES.classes if c.imagenet_ids]
    unmapped = [c.id for c in CITYSCAPES.classes if not c.imagenet_ids]
    assert mapped and unmapped
    for head in (vgg16_net.spatiotemporal_head, vgg16_net.appearance_head):
        assert torch.equal(head.fc6.weight, vgg16_state["classifier.0.weight"].reshape(4096, 512, 7, 7))
        assert torch.equal(head.fc6.bias, vgg16_state["classifier.0.bias"])
        assert torch.equal(head.fc7.weight, vgg16_state["classifier.3.weight"].reshape(4096, 4096, 1, 1))
        assert torch.equal(head.fc7.bias, vgg16_state["classifier.3.bias"])
        score = head.score.weight[:, :, 0, 0]
        for c in mapped:
            ids = list(c.imagenet_ids)
            torch.testing.assert_close(score[c.id], vgg16_state["classifier.6.weight"][ids].mean(dim=0))
            torch.testing.assert_close(head.score.bias[c.id], vgg16_state["classifier.6.bias"][ids].mean())
        assert score[unmapped].std().item() == pytest.approx(0.1, abs=0.003)
        assert score[unmapped].mean().item() == pytest.approx(0.0, abs=0.003)
        assert (head.score.bias[unmapped] == 0).all()


@pytest.mark.slow
def test_vgg16_file_problems_are_named(vgg16_net: TwoStreamNet, vgg16_state: dict[str, torch.Tensor]) -> None:
    missing = {k: v for k, v in vgg16_state.items() if k != "features.28.bias"}
    with pytest.raises(ValueError, match=r"missing features\.28\.bias \(expected shape \[512\]\)"):
        load_vgg16_weights(vgg16_net, missing, label_set=CITYSCAPES)

    wrong = {**vgg16_state, "classifier.6.weight": torch.zeros(19, 4096)}
    with pytest.raises(ValueError, match=r"classifier\.6\.weight has shape \[19, 4096\], expected \[1000, 4096\]"):
        load_vgg16_weights(vgg16_net, wrong, label_set=CITYSCAPES)

    extra = {**vgg16_state, "features.29.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected key features\.29\.weight"):
        load_vgg16_weights(vgg16_net, extra, label_set=CITYSCAPES)

    with pytest.raises(ValueError, match="label set 'drive' has 8 classes"):
        load_vgg16_weights(vgg16_net, vgg16_state, label_set=DRIVE)


def test_a_file_that_is_not_a_state_dict_is_refused_by_path(tmp_path: Path) -> None:
    net = small_net(len(CITYSCAPES))
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], not_a_dict)
    with pytest.raises(ValueError, match=r"list\.pth.*does not hold a state dict"):
        load_vgg16_weights(net, not_a_dict, label_set=CITYSCAPES)

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt.*is not a torch state-dict file"):
        load_vgg16_weights(net, text, label_set=CITYSCAPES)


def test_vgg16_weights_need_width_one() -> None:
    with pytest.raises(ValueError, match=r"only width=1\.0; this net has width=0\.0625"):
        load_vgg16_weights(small_net(len(DRIVE)), {}, label_set=DRIVE)


@pytest.mark.parametrize(("height", "width"), [(75, 100), (31, 33), (64, 96)])
@pytest.mark.parametrize(("net_width", "stride"), [(SMALL, 32), (1 / 32, 32), (1 / 32, 16), (1 / 32, 8)])
def test_any_input_size_gives_logits_of_that_size(height: int, width: int, net_width: float, stride: int) -> None:
    net = small_net(width=net_width, output_stride=stride).eval()
    with torch.no_grad():
        logits = net(*inputs(net, height, width, batch=2))
    assert logits.shape == (2, 5, height, width)
    assert torch.isfinite(logits).all()


def test_gradients_reach_both_streams() -> None:
    net = small_net().train()
    net(*inputs(net, 64, 64)).logsumexp(dim=1).mean().backward()
    for stream in (net.rgb_stream, net.flow_stream):
        for conv in (stream.convs[0], stream.convs[-1]):
            assert conv.weight.grad is not None
            assert conv.weight.grad.abs().sum() > 0


def test_skip_layers_start_as_no_ops_on_the_coarse_scores() -> None:
    """FCN-8s starts as FCN-32s with bilinear 2x steps: the finer levels add nothing until trained."""
    net = small_net(output_stride=8).eval()
    rgb, flow = inputs(net, 64, 96)
    with torch.no_grad():
        appearance, motion = net.rgb_stream(rgb), net.flow_stream(flow)
        scores = net.spatiotemporal_head(net.fusion(appearance, motion)) + net.appearance_head(appearance)
        for _ in range(2):
            scores = F.interpolate(scores, scale_factor=2, mode="bilinear", align_corners=False)
        expected = F.interpolate(scores, scale_factor=8, mode="bilinear", align_corners=False)
        torch.testing.assert_close(net(rgb, flow), expected)


@pytest.mark.slow
def test_stride_8_learns_a_thin_stripe_that_stride_32_cannot() -> None:
    """What the skip layers are for: a class 4 pixels wide survives at stride 8 and is lost at stride 32."""
    target = torch.zeros(1, 64, 64, dtype=torch.long)
    target[:, :, 30:34] = 1
    rgb = torch.zeros(1, 3, 64, 64)
    rgb[:, :, :, 30:34] = 1.0
    flow = torch.zeros(1, 2, 64, 64)
    ious = {}
    for stride in (32, 8):
        net = small_net(2, flow_length=1, output_stride=stride).train()
        optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(150):
            optimiser.zero_grad()
            F.cross_entropy(net(rgb, flow), target, weight=torch.tensor([1.0, 15.0])).backward()  # 1:15 pixels
            optimiser.step()
        with torch.no_grad():
            stripe = net.eval()(rgb, flow).argmax(dim=1) == 1
        truth = target == 1
        ious[stride] = float((stripe & truth).sum() / (stripe | truth).sum())
    assert ious[8] > 0.9
    assert ious[32] < 0.6  # bilinear from a 2x2 grid: a blob twice the stripe's width at best


def test_deconvolution_starts_as_bilinear_upsampling() -> None:
    net = small_net()
    with torch.no_grad():
        constant = net.upsample(torch.full((1, 5, 3, 4), 2.5))
        assert constant.shape == (1, 5, 96, 128)
        torch.testing.assert_close(constant, torch.full_like(constant, 2.5))

        scores = torch.randn(2, 5, 3, 4)
        expected = F.interpolate(scores, scale_factor=32, mode="bilinear", align_corners=False)
        torch.testing.assert_close(net.upsample(scores), expected)


def test_conv_fusion_starts_as_sum_of_the_streams() -> None:
    net = small_net()
    channels = net.rgb_stream.out_channels
    rgb, flow = torch.rand(1, channels, 4, 6), torch.rand(1, channels, 4, 6)
    with torch.no_grad():
        torch.testing.assert_close(net.fusion(rgb, flow), rgb + flow)


def test_eval_is_deterministic_and_dropout_acts_only_in_training() -> None:
    net = small_net()
    rgb, flow = inputs(net, 64, 96)
    with torch.no_grad():
        net.eval()
        torch.testing.assert_close(net(rgb, flow), net(rgb, flow), rtol=0, atol=0)
        net.train()
        assert not torch.equal(net(rgb, flow), net(rgb, flow))


def test_inputs_that_do_not_fit_are_refused() -> None:
    net = small_net(flow_length=3)
    rgb, flow = inputs(net, 32, 32)
    with pytest.raises(ValueError, match="flow_length=3"):
        net(rgb, flow[:, :4])
    with pytest.raises(ValueError, match="rgb must be"):
        net(rgb[:, :1], flow)
    with pytest.raises(ValueError, match="share batch size and H, W"):
        net(rgb, flow[..., :16])
    with pytest.raises(ValueError, match="width must be a positive number"):
        TwoStreamNet(5, width=0)
    with pytest.raises(ValueError, match="flow_length must be a positive integer"):
        TwoStreamNet(5, flow_length=0)
    with pytest.raises(ValueError, match=r"output_stride must be one of \(32, 16, 8\), got 4"):
        TwoStreamNet(5, output_stride=4)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_at_opset_17_matches_torch(dynamo: bool, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    net = small_net(width=1 / 32, output_stride=8).eval()
    rgb, flow = inputs(net, 50, 70)  # not multiples of 32: padding and cropping are in the graph
    path = tmp_path / "net.onnx"
    torch.onnx.export(
        net, (rgb, flow), path, opset_version=17, input_names=["rgb", "flow"], output_names=["logits"], dynamo=dynamo
    )

    model = onnx.load(path)
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"rgb": rgb.numpy(), "flow": flow.numpy()})
    with torch.no_grad():
        expected = net(rgb, flow).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
