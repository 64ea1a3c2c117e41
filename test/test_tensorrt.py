"""The TensorRT backend: what runs everywhere (I/O checks, accuracy figures, the missing-engine path, the CLI's
argument checks), and, where TensorRT and a GPU exist, a real tiny engine against ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import shlex
from pathlib import Path

import pytest
import torch
from conftest import tiny_spec

from wsvs_ros.engine import tensorrt_cache
from wsvs_ros.engine.engine_cache import EngineRecord, file_sha256, lookup, store
from wsvs_ros.engine.onnx_export import export_onnx, read_onnx_spec
from wsvs_ros.engine.tensorrt_build import AccuracyCheck, build_engine_command, compare_logits, reference_inputs
from wsvs_ros.engine.tensorrt_cache import EngineNotBuiltError, engine_key, format_record, load_tensorrt_engine
from wsvs_ros.engine.tensorrt_runtime import BuildTarget, TensorInfo, check_engine_io, cuda_device, detect_target
from wsvs_ros.model.checkpoint import build_model
from wsvs_ros.tools import cli

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
ORIN = BuildTarget(tensorrt_version="10.3.0", gpu_name="Orin", compute_capability=(8, 7))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    spec = tiny_spec()
    return export_onnx(build_model(spec), spec, tmp_path_factory.mktemp("model") / "tiny model.onnx")


def _io(spec=None, **change) -> list[TensorInfo]:
    spec = spec or tiny_spec()
    tensors = {
        "rgb": TensorInfo("rgb", True, (1, 3, 32, 64), "float32"),
        "flow": TensorInfo("flow", True, (1, 2 * spec.flow_length, 32, 64), "float32"),
        "logits": TensorInfo("logits", False, (1, spec.num_classes, 32, 64), "float32"),
    }
    for name, fields in change.items():
        tensors[name] = dataclasses.replace(tensors[name], **fields)
    return list(tensors.values())


def test_engine_io_matching_the_model_metadata_is_accepted() -> None:
    check_engine_io(_io(), tiny_spec())
    check_engine_io(_io(rgb={"dtype": "float16"}), tiny_spec())


def test_engine_with_other_tensor_names_is_refused_with_the_rebuild_command() -> None:
    tensors = _io(rgb={"name": "input.1"})
    with pytest.raises(ValueError, match=r"inputs \['flow', 'input.1'\].*wsvs build-engine"):
        check_engine_io(tensors, tiny_spec())


def test_engine_built_for_another_model_is_refused_naming_both_shapes() -> None:
    tensors = _io(flow={"shape": (1, 20, 32, 64)})  # built with flow_length 10, the metadata says 4
    with pytest.raises(ValueError, match=r"'flow' has shape \(1, 20, 32, 64\).*needs \(1, 8, 32, 64\).*--force"):
        check_engine_io(tensors, tiny_spec())


def test_engine_with_integer_io_is_refused() -> None:
    with pytest.raises(ValueError, match="'logits' is int32"):
        check_engine_io(_io(logits={"dtype": "int32"}), tiny_spec())


def test_identical_logits_agree_everywhere() -> None:
    logits = torch.randn(1, 5, 4, 6)
    assert compare_logits([(logits, logits.clone())]) == (0.0, 100.0)


def test_label_agreement_counts_pixels_with_the_same_argmax() -> None:
    reference = torch.zeros(1, 3, 2, 4)
    reference[0, 1] = 1.0  # class 1 everywhere
    got = reference.clone()
    got[0, 2, 0, 0] = 1.5  # one pixel of 8 turns to class 2
    got[0, 1, 1, 3] = 1.25  # a changed value that keeps the class
    max_diff, agreement = compare_logits([(got, reference), (reference, reference)])
    assert max_diff == pytest.approx(1.5)
    assert agreement == pytest.approx(100.0 * 15 / 16)


def test_compare_logits_refuses_mismatched_or_missing_logits() -> None:
    with pytest.raises(ValueError, match="cannot be compared"):
        compare_logits([(torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 2, 2))])
    with pytest.raises(ValueError, match="no logits"):
        compare_logits([])


def test_accuracy_check_passes_from_its_threshold_and_round_trips() -> None:
    check = AccuracyCheck("onnxruntime (CPU, fp32)", "random normal inputs (seed 0)", 4, 0.031, 99.0, 99.0)
    assert check.passed
    assert not dataclasses.replace(check, label_agreement=98.99).passed
    assert AccuracyCheck.from_dict(check.to_dict()) == check
    assert "99.00 %" in check.summary() and "0.031" in check.summary() and "ok" in check.summary()
    assert "BELOW THRESHOLD" in dataclasses.replace(check, label_agreement=90.0).summary()


def test_random_check_inputs_are_seeded_and_clipped_like_encoded_flow() -> None:
    spec = tiny_spec()
    first, description = reference_inputs(spec, samples=2)
    again, _ = reference_inputs(spec, samples=2)
    assert description == "random normal inputs (seed 0)" and len(first) == 2
    for (rgb, flow), (rgb2, flow2) in zip(first, again, strict=True):
        assert torch.equal(rgb, rgb2) and torch.equal(flow, flow2)
        assert rgb.shape == (1, 3, 32, 64) and flow.shape == (1, 2 * spec.flow_length, 32, 64)
        assert flow.abs().max() <= spec.flow_clip


def test_build_command_carries_the_precision_flags_and_quotes_paths(tmp_path: Path) -> None:
    model = tmp_path / "my models" / "drive.onnx"
    fp16 = build_engine_command(model, precision="fp16")
    assert shlex.split(fp16) == ["wsvs", "build-engine", str(model.resolve()), "--fp16"]
    assert shlex.split(build_engine_command(model, precision="fp32"))[3:] == []
    int8 = build_engine_command(model, precision="int8", cache_dir=tmp_path / "cache")
    assert shlex.split(int8)[3:] == ["--int8", "--calib", "FRAMES_DIR_OR_BAG", "--cache-dir", str(tmp_path / "cache")]


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed")
def test_loading_without_tensorrt_says_how_to_install_it(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="pip install tensorrt") as raised:
        load_tensorrt_engine(tiny_onnx, precision="fp16", device="cuda", cache_dir=tmp_path)
    assert "JetPack" in str(raised.value) and "python3-libnvinfer" in str(raised.value)


@pytest.fixture
def on_orin(monkeypatch: pytest.MonkeyPatch) -> BuildTarget:
    """This machine reads as a Jetson Orin with TensorRT 10.3 (nothing is built or loaded on that path)."""
    monkeypatch.setattr(tensorrt_cache, "detect_target", lambda device="cuda": ORIN)
    return ORIN


def test_missing_engine_raises_with_the_exact_build_command(tiny_onnx: Path, tmp_path: Path, on_orin) -> None:
    with pytest.raises(EngineNotBuiltError) as raised:
        load_tensorrt_engine(tiny_onnx, precision="fp16", device="cuda", cache_dir=tmp_path)
    expected = shlex.join(["wsvs", "build-engine", str(tiny_onnx.resolve()), "--fp16", "--cache-dir", str(tmp_path)])
    assert raised.value.command == expected
    assert expected in str(raised.value)
    assert "no engine has been built" in str(raised.value) and "takes minutes" in str(raised.value)


def test_engine_from_an_older_tensorrt_is_not_loaded_and_the_reason_names_both_versions(
    tiny_onnx: Path, tmp_path: Path, on_orin
) -> None:
    key = engine_key(read_onnx_spec(tiny_onnx), "fp16", on_orin, onnx_sha256=file_sha256(tiny_onnx))
    old = dataclasses.replace(key, tensorrt_version="8.6.2")
    store(old, b"a plan built by TensorRT 8.6.2", tmp_path, build_seconds=400)
    with pytest.raises(EngineNotBuiltError, match="built with TensorRT 8.6.2, this is TensorRT 10.3.0"):
        load_tensorrt_engine(tiny_onnx, precision="fp16", device="cuda", cache_dir=tmp_path)


def test_int8_is_never_built_implicitly_because_it_needs_calibration_frames(
    tiny_onnx: Path, tmp_path: Path, on_orin
) -> None:
    with pytest.raises(EngineNotBuiltError, match="--int8 --calib FRAMES_DIR_OR_BAG") as raised:
        load_tensorrt_engine(tiny_onnx, precision="int8", device="cuda", cache_dir=tmp_path, build_if_missing=True)
    assert "your recorded camera frames" in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # nothing was built


def test_tensorrt_needs_a_cuda_device() -> None:
    with pytest.raises(ValueError, match="CUDA GPU"):
        cuda_device("cpu")


def test_record_summary_shows_the_plan_target_and_check(tmp_path: Path) -> None:
    key = engine_key(tiny_spec(), "fp16", ORIN, onnx_sha256="ab" * 32)
    check = AccuracyCheck("onnxruntime (CPU, fp32)", "frames of drive.mcap", 4, 0.02, 99.91, 99.0)
    stored = store(key, b"x" * 3 * 2**20, tmp_path, build_seconds=287.4, check=check.to_dict())
    text = format_record(stored.plan_path, stored.record)
    assert str(stored.plan_path) in text and "3.0 MiB" in text and "TensorRT 10.3.0" in text
    assert "Orin compute 8.7" in text and "287 s" in text and "99.91 %" in text
    skipped = dataclasses.replace(stored.record, check={"skipped": "onnxruntime is not installed"})
    assert "check: skipped: onnxruntime is not installed" in format_record(stored.plan_path, skipped)


# The CLI: argument mistakes are reported before anything needs TensorRT or a GPU.


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--int8"], "--int8 needs --calib"),
        (["--fp16", "--calibrator", "minmax"], "--calibrator applies only with --int8"),
        (["--fp16", "--topic", "/camera/image_raw"], "--topic names the camera topic of the --calib bag"),
        (["--fp16", "--workspace", "0"], "must be positive"),
    ],
)
def test_build_engine_refuses_inconsistent_flags(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["build-engine", "model.onnx", *argv]) == 2
    assert message in capsys.readouterr().err


def test_build_engine_refuses_an_unknown_calibrator() -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(["build-engine", "model.onnx", "--int8", "--calib", "frames", "--calibrator", "percentile"])
    assert raised.value.code == 2


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed")
def test_build_engine_without_tensorrt_exits_with_the_install_hint(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert cli.main(["build-engine", str(tiny_onnx), "--fp16", "--cache-dir", str(tmp_path)]) == 2
    assert "pip install tensorrt" in capsys.readouterr().err


# With TensorRT and a CUDA GPU: a real tiny engine.


@pytest.fixture
def trt_gpu() -> None:
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT tests need CUDA-enabled PyTorch and a GPU")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_built_engine_matches_onnxruntime_runs_twice_and_is_cached(
    trt_gpu, tiny_onnx: Path, tmp_path: Path, precision: str, caplog: pytest.LogCaptureFixture
) -> None:
    from wsvs_ros.engine.onnxruntime_engine import OnnxRuntimeEngine

    with caplog.at_level(logging.INFO):
        engine = load_tensorrt_engine(
            tiny_onnx, precision=precision, device="cuda", cache_dir=tmp_path, build_if_missing=True
        )
    assert "building the TensorRT" in caplog.text
    found = lookup(
        engine_key(engine.spec, precision, detect_target("cuda"), onnx_sha256=file_sha256(tiny_onnx)),
        tmp_path,
    )
    assert found.hit and isinstance(found.record, EngineRecord)
    assert found.record.check["passed"], found.record.check

    pairs, _ = reference_inputs(engine.spec, samples=1)
    rgb, flow = pairs[0]
    expected = OnnxRuntimeEngine(tiny_onnx).infer(rgb, flow)
    first = engine.infer(rgb.cuda(), flow.cuda())
    second = engine.infer(rgb.cuda(), flow.cuda())
    assert first.device.type == "cuda" and first.dtype == torch.float32 and first.shape == expected.shape
    torch.testing.assert_close(first, second)
    tolerance = 1e-3 if precision == "fp32" else 5e-2
    assert (first.cpu() - expected).abs().max().item() < tolerance * max(1.0, expected.abs().max().item())

    again = load_tensorrt_engine(tiny_onnx, precision=precision, device="cuda", cache_dir=tmp_path)  # no build
    torch.testing.assert_close(again.infer(rgb.cuda(), flow.cuda()), first)


def test_truncated_cached_plan_is_rebuilt_with_one_line(
    trt_gpu, tiny_onnx: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    load_tensorrt_engine(tiny_onnx, precision="fp32", device="cuda", cache_dir=tmp_path, build_if_missing=True)
    (plan,) = tmp_path.glob("*.plan")
    plan.write_bytes(plan.read_bytes()[:1000])
    with pytest.raises(EngineNotBuiltError, match="truncated"):
        load_tensorrt_engine(tiny_onnx, precision="fp32", device="cuda", cache_dir=tmp_path)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_tensorrt_engine(tiny_onnx, precision="fp32", device="cuda", cache_dir=tmp_path, build_if_missing=True)
    assert "truncated" in caplog.text
