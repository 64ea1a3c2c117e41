"""`wsvs` command line: bench figures as JSON, export, and errors that say what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsvs_ros.engine.onnx_export import read_onnx_spec
from wsvs_ros.model.checkpoint import load_checkpoint
from wsvs_ros.tools.cli import main

BENCH_KEYS = {"frames", "flows_computed", "device", "backend", "width", "input_size", "stage_ms"}
STAGES = {"decode", "preprocess", "flow", "network", "crf", "postprocess", "total"}


def bench_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["bench", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_json_reports_every_stage_and_one_flow_per_frame(capsys: pytest.CaptureFixture[str]) -> None:
    r = bench_json(capsys, "--frames", "4", "--warmup", "1", "--width", "0.0625", "--input-size", "128x64",
                   "--camera-size", "256x128")  # fmt: skip
    assert set(r) >= BENCH_KEYS
    assert set(r["stage_ms"]) == STAGES
    assert all(set(s) >= {"mean", "p95"} for s in r["stage_ms"].values())
    assert r["frames"] == 4 and r["flows_computed"] == 4, "5 frames pushed, 4 flows"
    assert r["input_size"] == "128x64" and r["device"] == "cpu" and r["backend"] == "torch"
    total = r["stage_ms"]["total"]["mean"]
    parts = sum(r["stage_ms"][s]["mean"] for s in STAGES - {"total"})
    assert total == pytest.approx(parts, rel=0.05)


def test_bench_runs_on_onnxruntime_with_opencv_flow(capsys: pytest.CaptureFixture[str]) -> None:
    r = bench_json(capsys, "--frames", "2", "--warmup", "0", "--width", "0.0625", "--input-size", "128x64",
                   "--backend", "onnxruntime", "--flow", "opencv", "--output-stride", "8",
                   "--crf-iterations", "2")  # fmt: skip
    assert r["backend"] == "onnxruntime" and r["flow"] == "opencv" and r["frames"] == 2
    assert r["crf_iterations"] == 2 and r["stage_ms"]["crf"]["mean"] > 0
    assert r["output_stride"] == 8  # the skip layers export and run in ONNX Runtime


@pytest.mark.slow
def test_bench_json_works_for_the_full_width_network_at_512x256(capsys: pytest.CaptureFixture[str]) -> None:
    r = bench_json(capsys, "--frames", "1", "--warmup", "0", "--width", "1.0", "--input-size", "512x256")
    assert r["width"] == 1.0 and r["stage_ms"]["network"]["mean"] > 0
    assert r["params"] > 250e6, "width 1.0 is two VGG-16 streams with fc6/fc7 heads"


def test_bench_runs_the_efficientnet_backbone(capsys: pytest.CaptureFixture[str]) -> None:
    r = bench_json(capsys, "--frames", "1", "--warmup", "0", "--backbone", "efficientnet_lite0", "--input-size",
                   "128x64", "--camera-size", "256x128", "--flow", "opencv")  # fmt: skip
    assert r["backbone"] == "efficientnet_lite0" and r["stage_ms"]["network"]["mean"] > 0
    assert 6e6 < r["params"] < 8e6, "two Lite0 streams (3.0 M each) and two 1x1 heads to 1280 channels"


def test_export_writes_onnx_with_the_checkpoint_spec(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", str(tiny_checkpoint), "--out", str(out)]) == 0
    assert read_onnx_spec(out) == load_checkpoint(tiny_checkpoint).spec


def test_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "wsvs export: error: model file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--input-size", "512by256"])
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_bench_compile_with_the_opencv_flow_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--flow", "opencv", "--compile", "--width", "0.0625", "--input-size", "128x64", "--frames", "1"]
    assert main(args) == 2
    assert "wsvs bench: error: compile applies to the 'torch' flow backend only" in capsys.readouterr().err
