"""`wsvs`: command-line entry point (bench, export)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 512x256, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _cmd_bench(args: argparse.Namespace) -> int:
    from wsvs_ros.bench import BenchConfig, format_report, run_bench

    cfg = BenchConfig(
        frames=args.frames, warmup=args.warmup, input_size=args.input_size, camera_size=args.camera_size,
        width=args.width, backend=args.backend, device=args.device, precision=args.precision, flow=args.flow,
        flow_length=args.flow_length,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsvs", description="Two-stream weakly-supervised video segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("bench", help="per-stage latency on a synthetic moving scene")
    p.add_argument("--frames", type=int, default=30, help="frames measured (after --warmup)")
    p.add_argument("--warmup", type=int, default=3, help="frames pushed first and left out of the figures")
    p.add_argument("--input-size", type=_size, default=(512, 256), help="network input WxH (default 512x256)")
    p.add_argument("--camera-size", type=_size, default=(1024, 512), help="camera frame WxH (default 1024x512)")
    p.add_argument("--width", type=_positive_float, default=1.0, help="channel width multiplier (1.0 = VGG-16)")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16"), default="auto", help="auto: fp16 on CUDA")
    p.add_argument("--flow", choices=("torch", "opencv"), default="torch", help="optical flow backend")
    p.add_argument("--flow-length", type=int, default=10, help="L, flows stacked per frame")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("export", help="export a checkpoint to ONNX (metadata inside and in OUT.json)")
    p.add_argument("checkpoint", help="a .pt checkpoint written by wsvs-train")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as e:
        print(f"wsvs {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
