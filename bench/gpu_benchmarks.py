"""GPU figures for docs/benchmarks.md: `wsvs bench` over sizes/widths/precisions, and TorchFlow EPE fp32 vs fp16.

Run on a CUDA machine from the repo root:  python3 bench/gpu_benchmarks.py --out results.json
Prints a Markdown table last. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from wsvs_ros.flow import TorchFlow
from wsvs_ros.flow.warp import backward_warp
from wsvs_ros.tools.bench import BenchConfig, run_bench


def textured(h: int, w: int, seed: int, device: torch.device) -> torch.Tensor:
    """(1, 3, H, W) multi-scale noise in 0..255: structure at every scale for the flow to lock onto."""
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(1, 3, h, w)
    for cells in (4, 16, 64, 256):
        coarse = torch.rand(1, 3, max(2, cells * h // w), cells, generator=g)
        img += torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.to(device)


def known_flows(h: int, w: int, device: torch.device) -> dict[str, torch.Tensor]:
    """(1, 2, H, W) flows up to ~10 px: translation, zoom about a focus of expansion, small rotation."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    cx, cy = w / 2, h * 0.45
    zoom = 10 / max(cx, w - cx)
    a = math.radians(10 / (w / 2) * 180 / math.pi)  # ~10 px at the image edge
    flows = {
        "translation": torch.stack([torch.full_like(xs, 6.5), torch.full_like(ys, -3.25)]),
        "zoom": torch.stack([(xs - cx) * zoom, (ys - cy) * zoom]),
        "rotation": torch.stack([-(ys - h / 2) * a, (xs - w / 2) * a]),
    }
    return {k: v.unsqueeze(0).to(device) for k, v in flows.items()}


def flow_epe(device: torch.device, size: tuple[int, int]) -> dict[str, dict[str, float]]:
    """Mean endpoint error (px, 16 px border ignored) and median time of TorchFlow in fp32 and fp16."""
    w, h = size
    cur = textured(h, w, 0, device)
    out: dict[str, dict[str, float]] = {}
    flow_fn = TorchFlow()
    for name, gt in known_flows(h, w, device).items():
        prev = backward_warp(cur, gt)  # prev(x) = cur(x + gt(x)), the backends' convention
        for dtype in (torch.float32, torch.float16):
            est = flow_fn(prev.to(dtype), cur.to(dtype)).float()
            err = (est - gt).norm(dim=1)[:, 16:-16, 16:-16].mean().item()
            times = []
            for _ in range(20):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                flow_fn(prev.to(dtype), cur.to(dtype))
                torch.cuda.synchronize()
                times.append((time.perf_counter() - t0) * 1e3)
            out.setdefault(name, {})[f"epe_{str(dtype)[6:]}"] = err
            out[name][f"ms_{str(dtype)[6:]}"] = float(np.median(times))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_benchmarks.json")
    parser.add_argument("--frames", type=int, default=50)
    args = parser.parse_args()
    device = torch.device("cuda")
    rows = []
    fast = {"scale_factor": 0.5, "warps": 3}
    configs = [  # (input size, width, precision, CUDA graphs, flow params)
        ((1024, 512), 1.0, "fp16", True, {}),
        ((1024, 512), 1.0, "fp16", True, fast),
        ((1024, 512), 1.0, "fp32", True, {}),
        ((1024, 512), 1.0, "fp16", False, {}),
        ((1024, 512), 0.25, "fp16", True, {}),
        ((1024, 512), 0.25, "fp16", True, fast),
        ((960, 544), 1.0, "fp16", True, {}),
        ((960, 544), 0.25, "fp16", True, fast),
        ((512, 256), 0.25, "fp16", True, {}),
    ]
    for size, width, precision, graph, flow_params in configs:
        cfg = BenchConfig(
            frames=args.frames, warmup=5, input_size=size, camera_size=size, width=width, device="cuda",
            precision=precision, flow="torch", flow_params=flow_params, cuda_graph=graph,
        )  # fmt: skip
        r = run_bench(cfg, progress=False)
        rows.append(r)
        print(json.dumps({k: r[k] for k in ("input_size", "width", "precision", "cuda_graph", "flow_params", "fps")}))
    epe = flow_epe(device, (1024, 512))
    with open(args.out, "w") as f:
        json.dump({"bench": rows, "flow_epe_1024x512": epe}, f, indent=2)
    print(f"\n{rows[0]['device_name']}, torch {torch.__version__}\n")
    print(
        "| input | width | precision | CUDA graphs | flow params | flow ms | network ms | postprocess ms "
        "| flow+net+post ms | total ms (incl. decode, preprocess) | fps | peak GPU MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["stage_ms"]
        fnp = s["flow"]["mean"] + s["network"]["mean"] + s["postprocess"]["mean"]
        print(f"| {r['input_size']} | {r['width']} | {r['precision']} | {r['cuda_graph']} | "
              f"{r['flow_params'] or 'defaults'} | {s['flow']['mean']:.2f} | "
              f"{s['network']['mean']:.2f} | {s['postprocess']['mean']:.2f} | {fnp:.2f} | {s['total']['mean']:.2f} | "
              f"{r['fps']:.1f} | {r['peak_gpu_mem_mb']:.0f} |")  # fmt: skip
    print("\n| motion (1024x512) | EPE fp32 px | EPE fp16 px | ms fp32 | ms fp16 |\n|---|---|---|---|---|")
    for name, e in epe.items():
        epes = f"{e['epe_float32']:.3f} | {e['epe_float16']:.3f}"
        print(f"| {name} | {epes} | {e['ms_float32']:.2f} | {e['ms_float16']:.2f} |")


if __name__ == "__main__":
    main()
