"""ONNX export with the model's `ModelSpec` inside the file and beside it."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from wsvs_ros.model.two_stream import TwoStreamNet
from wsvs_ros.spec import ModelSpec

SPEC_KEY = "wsvs_spec"  # ONNX metadata_props key holding ModelSpec.to_dict() as JSON
INPUT_NAMES = ("rgb", "flow")
OUTPUT_NAME = "logits"
OPSET = 17


def sidecar_path(onnx_path: str | os.PathLike[str]) -> Path:
    return Path(f"{onnx_path}.json")


def export_onnx(model: TwoStreamNet, spec: ModelSpec, out: str | os.PathLike[str], *, opset: int = OPSET) -> Path:
    """Write `out` (static shapes at the spec's input size; TensorRT builds one profile for them) and `out.json`.

    Inputs are named "rgb" (1, 3, H, W) and "flow" (1, 2L, H, W), the output "logits" (1, C, H, W).
    Returns the path written.
    """
    import onnx  # the [onnx] extra

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).to("cpu", torch.float32).eval()  # the caller's model stays where it was
    h, w = spec.input_height, spec.input_width
    args = (torch.zeros(1, 3, h, w), torch.zeros(1, 2 * spec.flow_length, h, w))
    # The TorchScript-based exporter (dynamo=False) gives a plain static graph that TensorRT 8.6 parses as well.
    with warnings.catch_warnings():
        # Tracing turns the shape checks and padding decisions into constants: right for a static-shape export.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, args, str(out), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME], opset_version=opset,
            dynamo=False,
        )  # fmt: skip
    proto = onnx.load(str(out))
    entry = proto.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, json.dumps(spec.to_dict())
    onnx.save(proto, str(out))
    sidecar_path(out).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    return out


def cached_onnx(checkpoint: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
    """The ONNX export of a `.pt` checkpoint, made once and kept in `cache_dir/<sha256 of the file>/model.onnx`.

    Lets the onnxruntime backend take a checkpoint directly (on a CPU it runs the EfficientNet-Lite0 network 2-3x
    faster than torch: docs/benchmarks.md). The export is written into a temporary folder that is renamed when
    complete, so an interrupted export, or two processes exporting at once, never leave a partial model behind.
    """
    from wsvs_ros.engine.engine_cache import file_sha256
    from wsvs_ros.model.checkpoint import load_checkpoint

    folder = Path(cache_dir) / file_sha256(checkpoint)[:16]
    out = folder / "model.onnx"
    if out.is_file():
        return out
    ckpt = load_checkpoint(checkpoint)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=cache_dir))
    try:
        export_onnx(ckpt.model, ckpt.spec, tmp / "model.onnx")
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same export first
            if not out.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_onnx_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """The `ModelSpec` stored in an exported model (metadata first, then the `.json` sidecar).

    Raises:
        FileNotFoundError: no such file.
        ValueError: no spec in the model nor beside it, or an invalid one (the field is named).
    """
    try:
        import onnx
    except ImportError as e:
        raise ImportError("reading an exported model needs onnx: pip install 'wsvs_ros[onnx]'") from e

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ValueError(f"{path} is not a readable ONNX model: {e}") from e
    raw = {p.key: p.value for p in proto.metadata_props}.get(SPEC_KEY)
    if raw is None and sidecar_path(path).is_file():
        raw = sidecar_path(path).read_text()
    if raw is None:
        raise ValueError(f"{path} has no wsvs_ros metadata; export it with `wsvs export CHECKPOINT --out {path.name}`")
    try:
        return ModelSpec.from_dict(json.loads(raw))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: bad model metadata: {e}") from e
