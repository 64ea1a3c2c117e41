"""`wsvs bench`: per-stage latency of the whole frame path on a synthetic moving scene (no data, no model file).

Timings do not depend on the weights, so the network is freshly initialised at the requested backbone and width.
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from wsvs_ros.labels import DRIVE
from wsvs_ros.pipeline import STAGES as SEGMENTER_STAGES
from wsvs_ros.spec import ModelSpec
from wsvs_ros.stats import summarize, with_decode

STAGES = ("decode", *SEGMENTER_STAGES, "total")


@dataclass(frozen=True)
class BenchConfig:
    frames: int = 30
    warmup: int = 3
    input_size: tuple[int, int] = (512, 256)
    camera_size: tuple[int, int] = (1024, 512)
    backbone: str = "vgg16"
    width: float = 1.0
    output_stride: int = 32
    backend: str = "torch"
    device: str = "cpu"
    precision: str = "auto"  # auto = fp16 on CUDA, fp32 on CPU
    flow: str = "torch"
    flow_params: dict[str, Any] = field(default_factory=dict)  # the flow backend's keyword arguments
    flow_length: int = 10
    cuda_graph: bool = True  # replay the torch flow and the torch network as CUDA graphs on CUDA devices
    crf_iterations: int = 0  # dense-CRF post-processing (`Segmenter`), 0 = off
    flow_compile: bool = False  # TorchFlow(compile=True): each warp fused by torch.compile, built in warm-up


def moving_scene(frames: int, size: tuple[int, int], *, seed: int = 0) -> list[bytes]:
    """JPEG-encoded frames of a textured scene seen while driving forward: a zoom about a focus of expansion,
    a slow pan, and a block that moves on its own (like another car)."""
    w, h = size
    rng = np.random.default_rng(seed)
    texture = np.zeros((h, w, 3), np.float32)
    for cells in (4, 16, 64):  # multi-scale value noise so the flow has structure at every scale
        coarse = rng.uniform(0, 255, (max(2, cells * h // w), cells, 3)).astype(np.float32)
        texture += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) / 3
    texture = texture.clip(0, 255).astype(np.uint8)
    block = rng.uniform(0, 255, (h // 6, w // 8, 3)).astype(np.uint8)
    out = []
    for t in range(frames):
        zoom, pan = 1.0 + 0.004 * t, 0.5 * t
        m = np.array([[zoom, 0, (1 - zoom) * w / 2 + pan], [0, zoom, (1 - zoom) * h * 0.45]], np.float32)
        frame = cv2.warpAffine(texture, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        x = int(w * 0.2 + 3 * t) % (w - block.shape[1])
        frame[h // 2 : h // 2 + block.shape[0], x : x + block.shape[1]] = block
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(buf.tobytes())
    return out


def run_bench(cfg: BenchConfig, *, progress: bool = True) -> dict[str, Any]:
    """Push `warmup + frames` frames through a `Segmenter`; statistics cover the last `frames`."""
    from wsvs_ros.engine import OnnxRuntimeEngine, TorchEngine
    from wsvs_ros.engine.onnx_export import export_onnx
    from wsvs_ros.flow import make_flow
    from wsvs_ros.model.checkpoint import build_model
    from wsvs_ros.pipeline import Segmenter

    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but this PyTorch has no CUDA device")
    spec = ModelSpec(
        DRIVE.name, DRIVE.names, input_width=cfg.input_size[0], input_height=cfg.input_size[1],
        flow_length=cfg.flow_length, flow_method=cfg.flow, flow_params=cfg.flow_params, width=cfg.width,
        output_stride=cfg.output_stride, backbone=cfg.backbone,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(spec)
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        engine: TorchEngine | OnnxRuntimeEngine
        if cfg.backend == "torch":
            half = None if cfg.precision == "auto" else cfg.precision == "fp16"
            engine = TorchEngine(model, device=device, half=half, cuda_graph=cfg.cuda_graph)
            precision = "fp16" if engine.half else "fp32"
        elif cfg.backend == "onnxruntime":
            if device.type != "cpu":
                raise ValueError("the onnxruntime backend runs on the CPU; use --device cpu")
            engine = OnnxRuntimeEngine(export_onnx(model, spec, Path(tmp) / "bench.onnx"))
            precision = "fp32"
        else:
            raise ValueError(f"unknown backend {cfg.backend!r} (torch, onnxruntime)")
        graphed = cfg.cuda_graph and device.type == "cuda" and cfg.flow == "torch"
        flow = make_flow(spec, compile=cfg.flow_compile)
        seg = Segmenter(engine, spec, flow=flow, cuda_graph=graphed, crf_iterations=cfg.crf_iterations)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        seg.warm_up()  # builds the compiled flow's graph, if any
        warm_up_s = time.perf_counter() - start
        jpegs = moving_scene(cfg.warmup + cfg.frames, cfg.camera_size)
        rows: list[dict[str, float]] = []
        for i, jpeg in enumerate(tqdm(jpegs, desc="bench", unit="frame", disable=not progress)):
            start = time.perf_counter()
            bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert bgr is not None  # moving_scene's own JPEGs
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            decode_ms = (time.perf_counter() - start) * 1e3  # host work, so wall time is right
            (result,) = seg.push(rgb, stamp=i / 30.0)
            if i >= cfg.warmup:
                rows.append(with_decode(result.timings_ms, decode_ms))
    stage_ms = {s: summarize([r[s] for r in rows]) for s in STAGES}
    return {
        "frames": len(rows),
        "frames_pushed": len(jpegs),
        "flows_computed": seg.flows_computed,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "backend": cfg.backend,
        "precision": precision,
        "flow": cfg.flow,
        "flow_params": cfg.flow_params,
        "cuda_graph": graphed,
        "backbone": cfg.backbone,
        "warm_up_s": warm_up_s,
        # What the compiled flow did: graphs built (1 expected, all in warm-up), their seconds, why it fell back.
        "flow_compile": cfg.flow_compile,
        "flow_compilations": getattr(flow, "compilations", 0),
        "flow_compile_s": getattr(flow, "compile_seconds", 0.0),
        "flow_compile_error": getattr(flow, "compile_error", None),
        "width": cfg.width,
        "output_stride": cfg.output_stride,
        "crf_iterations": cfg.crf_iterations,
        "params": params,
        "input_size": f"{cfg.input_size[0]}x{cfg.input_size[1]}",
        "camera_size": f"{cfg.camera_size[0]}x{cfg.camera_size[1]}",
        "flow_length": cfg.flow_length,
        "stage_ms": stage_ms,
        "fps": 1e3 / stage_ms["total"]["mean"],
        "peak_gpu_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"wsvs bench: {r['frames']} frames (after warm-up), camera {r['camera_size']} -> input {r['input_size']}, "
        f"L={r['flow_length']}, {r['backbone']} width {r['width']}, output stride {r['output_stride']} "
        f"({r['params'] / 1e6:.1f} M params), CRF iterations {r['crf_iterations']}",
        f"  {r['backend']} {r['precision']} on {r['device']} ({r['device_name']}), flow: {r['flow']} {r['flow_params']}"
        f"{' (CUDA graph)' if r['cuda_graph'] else ''}{_compile_note(r)}, "
        f"flows computed: {r['flows_computed']} for {r['frames_pushed']} frames, warm-up {r['warm_up_s']:.1f} s",
        f"  {'stage':<12}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}",
    ]
    for stage, s in r["stage_ms"].items():
        lines.append(f"  {stage:<12}{s['mean']:>10.2f}{s['p50']:>10.2f}{s['p95']:>10.2f}")
    lines.append(f"  throughput  {r['fps']:.1f} fps (1000 / mean total)")
    if r["peak_gpu_mem_mb"] is not None:
        lines.append(f"  peak GPU memory {r['peak_gpu_mem_mb']:.0f} MiB")
    return "\n".join(lines)


def _compile_note(r: dict[str, Any]) -> str:
    if not r["flow_compile"]:
        return ""
    if r["flow_compile_error"]:
        return f" (compile failed, eager: {r['flow_compile_error']})"
    return f" (compiled: {r['flow_compilations']} graph(s) in {r['flow_compile_s']:.1f} s)"
