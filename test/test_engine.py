"""Engines: ONNX export carries the metadata, and ONNX Runtime agrees with PyTorch."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from conftest import tiny_spec

from wsvs_ros.engine import OnnxRuntimeEngine, TorchEngine
from wsvs_ros.engine.onnx_export import export_onnx, read_onnx_spec, sidecar_path
from wsvs_ros.model.checkpoint import build_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    spec = tiny_spec(input_width=128, input_height=64, flow_length=10, width=1 / 16)
    torch.manual_seed(1)
    model = build_model(spec)
    path = export_onnx(model, spec, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, spec, path


def test_onnxruntime_logits_match_torch_within_1e_4_relative(exported) -> None:
    model, spec, path = exported
    torch.manual_seed(2)
    rgb = torch.randn(1, 3, spec.input_height, spec.input_width)
    flow = torch.randn(1, 2 * spec.flow_length, spec.input_height, spec.input_width)
    expected = TorchEngine(model, device="cpu").infer(rgb, flow)
    got = OnnxRuntimeEngine(path).infer(rgb, flow)
    assert got.shape == expected.shape == (1, spec.num_classes, spec.input_height, spec.input_width)
    rel = ((got - expected).abs().max() / expected.abs().max()).item()
    assert rel < 1e-4, rel


def test_export_stores_the_spec_inside_the_model_and_beside_it(exported) -> None:
    _, spec, path = exported
    assert read_onnx_spec(path) == spec
    assert sidecar_path(path).is_file()
    names = [i.name for i in onnx.load(str(path)).graph.input]
    assert names == ["rgb", "flow"]


def test_onnx_without_metadata_is_refused_with_the_export_command(tmp_path: Path, exported) -> None:
    _, _, path = exported
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ValueError, match="wsvs export"):
        read_onnx_spec(bare)


def test_torch_engine_runs_fp32_on_cpu_and_fp16_only_when_asked() -> None:
    model = build_model(tiny_spec())
    assert TorchEngine(model, device="cpu").half is False
    assert TorchEngine(model, device="cpu", half=True).half is True


def test_onnxruntime_takes_a_checkpoint_exporting_it_once_into_the_cache(tmp_path: Path) -> None:
    from wsvs_ros.engine.loading import open_engine
    from wsvs_ros.model.checkpoint import save_checkpoint

    spec = tiny_spec(input_width=64, input_height=32, flow_length=2, width=1 / 16)
    torch.manual_seed(3)
    model = build_model(spec).eval()
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, model, spec)
    cache = tmp_path / "onnx"
    engine, loaded = open_engine(checkpoint, backend="onnxruntime", onnx_cache_dir=cache)
    assert loaded == spec
    [exported] = cache.glob("*/model.onnx")
    rgb, flow = torch.randn(1, 3, 32, 64), torch.randn(1, 4, 32, 64)
    with torch.no_grad():
        expected = model(rgb, flow)
    torch.testing.assert_close(engine.infer(rgb, flow), expected, rtol=1e-4, atol=1e-4)
    stamp = exported.stat().st_mtime_ns
    open_engine(checkpoint, backend="onnxruntime", onnx_cache_dir=cache)
    assert exported.stat().st_mtime_ns == stamp  # read from the cache, not exported again
    assert [p.name for p in cache.iterdir()] == [exported.parent.name]  # no temporary folder left behind
