"""`wsvs`: command-line entry point (demo, replay, bench, export, build-engine)."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from wsvs_ros.messages.conversions import DEFAULT_MAX_IMAGE_PIXELS
from wsvs_ros.messages.outputs import DEFAULT_MASK_CLASSES, DEFAULT_MAX_GAP_S
from wsvs_ros.spec import BACKBONES, OUTPUT_STRIDES

# Where a replay's output is when it is stopped: never half-written (see wsvs_ros.tools.replay).
_STOPPED_OUTPUT = "nothing was written to --out (a replay's output appears only once complete)"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 512x256, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object such as {{"warps": 3}}, got {text!r}')
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N (e.g. cuda:0), got {text!r}")
    return text


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _add_crf_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--crf-iterations", type=_non_negative_int, default=0, metavar="N",
        help="refine masks with N mean-field steps of a dense CRF, the paper's test-time post-processing "
        "(5: densecrf's default; 0: off, the default)",
    )  # fmt: skip


def _cmd_bench(args: argparse.Namespace) -> int:
    from wsvs_ros.tools.bench import BenchConfig, format_report, run_bench

    cfg = BenchConfig(
        frames=args.frames, warmup=args.warmup, input_size=args.input_size, camera_size=args.camera_size,
        width=args.width, output_stride=args.output_stride, backend=args.backend, device=args.device,
        precision=args.precision, flow=args.flow, backbone=args.backbone,
        flow_params=args.flow_params, flow_length=args.flow_length, cuda_graph=not args.no_cuda_graph,
        crf_iterations=args.crf_iterations, flow_compile=args.compile,
    )  # fmt: skip
    report = run_bench(cfg, progress=not args.json)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from wsvs_ros.engine.onnx_export import export_onnx
    from wsvs_ros.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    out = export_onnx(ckpt.model, ckpt.spec, args.out)
    print(f"wrote {out} and {out}.json ({ckpt.spec.input_width}x{ckpt.spec.input_height}, L={ckpt.spec.flow_length})")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    import logging

    from wsvs_ros.tools.replay import default_model, format_summary, replay_bag

    logging.basicConfig(format="wsvs replay: %(message)s")  # undecodable-frame warnings, above the progress bar
    stats = replay_bag(
        args.bag, args.out, topic=args.topic, model=args.model or default_model(), backend=args.backend,
        device=args.device, publish_classes=args.classes, png_every=args.png_every, max_gap=args.max_gap,
        crf_iterations=args.crf_iterations, max_image_pixels=args.max_image_pixels, force=args.force,
        progress=sys.stderr.isatty(),
    )  # fmt: skip
    print(format_summary(stats, args.out))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from wsvs_ros.tools.replay import default_model, format_summary, replay_bag, sample_drive

    # A demo output folder is replaced on the next run (replay only ever replaces folders it wrote itself).
    stats = replay_bag(
        sample_drive(), args.out, model=args.model or default_model(), backend=args.backend, device=args.device,
        crf_iterations=args.crf_iterations, force=True, progress=sys.stderr.isatty(),
    )  # fmt: skip
    print(format_summary(stats, args.out))
    return 0


def _cmd_build_engine(args: argparse.Namespace) -> int:
    if args.int8 and args.calib is None:
        raise ValueError("--int8 needs --calib: recorded camera frames (a folder of consecutive images or a bag)")
    if args.calibrator is not None and not args.int8:
        raise ValueError("--calibrator applies only with --int8")
    if args.topic is not None and args.calib is None:
        raise ValueError("--topic names the camera topic of the --calib bag; it needs --calib")
    if args.workspace < 1 or args.calib_frames < 1:
        raise ValueError("--workspace (MiB) and --calib-frames must be positive")
    import logging

    from wsvs_ros.engine.tensorrt_cache import build_and_cache, find_engine, format_record

    logging.basicConfig(level=logging.INFO, format="wsvs build-engine: %(message)s")
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    found = find_engine(args.model, precision=precision, cache_dir=args.cache_dir)
    if found.hit and not args.force:
        assert found.record is not None
        print(f"up to date (--force rebuilds): {format_record(found.plan_path, found.record)}")
        return 0
    _, cached = build_and_cache(
        args.model, precision=precision, cache_dir=args.cache_dir, workspace_mb=args.workspace,
        calib_source=args.calib, calib_topic=args.topic, calibrator=args.calibrator or "entropy",
        calib_frames=args.calib_frames, reason="--force" if found.hit else found.reason,
    )  # fmt: skip
    assert cached.record is not None
    print(format_record(cached.plan_path, cached.record))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsvs", description="Two-stream weakly-supervised video segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("bench", help="per-stage latency on a synthetic moving scene")
    p.add_argument("--frames", type=int, default=30, help="frames measured (after --warmup)")
    p.add_argument("--warmup", type=int, default=3, help="frames pushed first and left out of the figures")
    p.add_argument("--input-size", type=_size, default=(512, 256), help="network input WxH (default 512x256)")
    p.add_argument("--camera-size", type=_size, default=(1024, 512), help="camera frame WxH (default 1024x512)")
    p.add_argument("--backbone", choices=BACKBONES, default="vgg16", help="the streams' architecture")
    p.add_argument("--width", type=_positive_float, default=1.0, help="channel width multiplier (1.0 = VGG-16)")
    p.add_argument(
        "--output-stride", type=int, choices=OUTPUT_STRIDES, default=32, help="32: the paper's net; 16, 8: FCN skips"
    )
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16"), default="auto", help="auto: fp16 on CUDA")
    p.add_argument("--flow", choices=("torch", "opencv"), default="torch", help="optical flow backend")
    p.add_argument(
        "--flow-params", type=_json_object, default={}, help="flow backend arguments as JSON, e.g. '{\"warps\": 3}'"
    )
    p.add_argument("--flow-length", type=int, default=10, help="L, flows stacked per frame")
    p.add_argument("--no-cuda-graph", action="store_true", help="run flow and network eagerly on CUDA (for comparison)")
    p.add_argument(
        "--compile", action="store_true",
        help="torch flow: fuse each warp with torch.compile (built during warm-up, minutes on a small CPU)",
    )  # fmt: skip
    _add_crf_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("export", help="export a checkpoint to ONNX (metadata inside and in OUT.json)")
    p.add_argument("checkpoint", help="a .pt checkpoint written by wsvs-train")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("demo", help="segment the bundled sample drive with the default model (no ROS, no GPU)")
    p.add_argument("--out", default="wsvs_demo", help="output folder (default ./wsvs_demo; replaced on each run)")
    p.add_argument("--model", help="a .pt checkpoint or .onnx instead of the shipped default model")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"), default="torch")
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    _add_crf_argument(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("replay", help="segment a bag's camera topic offline: masks bag, overlay video, PNGs, stats")
    p.add_argument("bag", help="rosbag2 directory, .mcap or .db3 file, or ROS 1 .bag (only read)")
    p.add_argument("--topic", help="Image or CompressedImage topic (default: the bag's only image topic)")
    p.add_argument("--out", required=True, help="directory to create for the outputs")
    p.add_argument("--model", help="checkpoint .pt, or .onnx for onnxruntime/tensorrt (default: the packaged model)")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"), default="torch")
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--png-every", type=int, default=10, help="write every Nth overlay as a PNG (0: none)")
    p.add_argument("--classes", nargs="+", default=list(DEFAULT_MASK_CLASSES), help="one mask topic each")
    p.add_argument(
        "--max-gap",
        type=_positive_float,
        default=DEFAULT_MAX_GAP_S,
        help="seconds between frames that restart the flow",
    )
    _add_crf_argument(p)
    p.add_argument(
        "--max-image-pixels", type=_positive_int, default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
        help="skip frames of more than N pixels as bad, refused from their header before decoding "
        f"(default {DEFAULT_MAX_IMAGE_PIXELS} = 4096x4096)",
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace --out if it holds an earlier replay's output")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("build-engine", help="build, check and cache the TensorRT engine of a .onnx on this GPU")
    p.add_argument("model", help="the .onnx written by `wsvs export`")
    p.add_argument("--fp16", action="store_true", help="fp16 engine (default fp32; the usual choice on Jetson)")
    p.add_argument("--int8", action="store_true", help="int8 engine calibrated on --calib (others run fp16)")
    p.add_argument("--calib", help="frames for int8 calibration and the accuracy check: folder of images or a bag")
    p.add_argument("--topic", help="camera topic of the --calib bag (default: its only image topic)")
    p.add_argument("--calibrator", choices=("entropy", "minmax"), help="int8 calibration algorithm (default entropy)")
    p.add_argument("--calib-frames", type=int, default=300, help="frames calibrated on, spread over the recording")
    p.add_argument("--workspace", type=int, default=1024, help="TensorRT workspace limit in MiB (default 1024)")
    p.add_argument("--cache-dir", help="engine cache (default $XDG_CACHE_HOME/wsvs_ros/engines or ~/.cache/...)")
    p.add_argument("--force", action="store_true", help="rebuild even if a valid engine is cached")
    p.set_defaults(func=_cmd_build_engine)
    return parser


class _Terminated(BaseException):
    """SIGTERM, raised where the main thread is, so that it unwinds (and cleans up) as Ctrl-C does."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run a `wsvs` command; returns the exit status: 0, 2 for an error (one line on stderr), 130 after Ctrl-C and
    143 after SIGTERM (the shells' 128 + signal number; an interrupted replay removes what it had written)."""
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    stopped = f"; {_STOPPED_OUTPUT}" if args.command in ("replay", "demo") else ""
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError, RuntimeError) as e:
        print(f"wsvs {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wsvs {args.command}: interrupted (Ctrl-C){stopped}", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"wsvs {args.command}: terminated (SIGTERM){stopped}", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
