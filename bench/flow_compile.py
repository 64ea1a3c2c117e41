"""Eager against compiled TorchFlow in one process, calls alternating on the same frames of `wsvs bench`'s moving
scene, so that load from other jobs on a shared machine hits both alike.

    python3 bench/flow_compile.py --size 256x128 --pairs 10 [--device cuda] [--flow-params '{"warps": 3}']

Prints the graph's build time, per-call milliseconds (mean, p50, p95) of each, and the mean absolute difference of
their flows. CUDA calls are timed with a synchronisation each and run eagerly, not as CUDA graphs (`wsvs bench` has
the replayed figures).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import cv2
import numpy as np
import torch

from wsvs_ros.flow import TorchFlow
from wsvs_ros.stats import summarize
from wsvs_ros.tools.bench import moving_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256x128", help="frame WxH")
    parser.add_argument("--pairs", type=int, default=10, help="frame pairs timed after the one that compiles")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--flow-params", type=json.loads, default={}, help="TorchFlow arguments as JSON")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    device = torch.device(args.device)
    frames = []
    for jpeg in moving_scene(args.pairs + 2, (width, height)):
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        frames.append(torch.from_numpy(rgb).permute(2, 0, 1)[None].float().to(device))

    def timed(fn: TorchFlow, prev: torch.Tensor, cur: torch.Tensor) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        flow = fn(prev, cur)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return flow, (time.perf_counter() - start) * 1e3

    eager, compiled = TorchFlow(**args.flow_params), TorchFlow(**args.flow_params, compile=True)
    timed(eager, frames[0], frames[1])  # first-call allocations and initialisations, like the compiled warm-up
    _, first_ms = timed(compiled, frames[0], frames[1])
    eager_ms, compiled_ms, diffs = [], [], []
    for prev, cur in itertools.pairwise(frames[1:]):
        reference, ms = timed(eager, prev, cur)
        eager_ms.append(ms)
        flow, ms = timed(compiled, prev, cur)
        compiled_ms.append(ms)
        diffs.append(float((flow - reference).abs().mean()))
    print(f"TorchFlow {args.flow_params} at {args.size} on {device}, torch {torch.__version__}, {args.pairs} pairs")
    print(f"  compiled: {compiled.compilations} graph(s) in {compiled.compile_seconds:.1f} s "
          f"(first call {first_ms / 1e3:.1f} s), fell back: {compiled.compile_error}")  # fmt: skip
    for name, ms_list in (("eager", eager_ms), ("compiled", compiled_ms)):
        s = summarize(ms_list)
        print(f"  {name:<9} mean {s['mean']:7.1f} ms  p50 {s['p50']:7.1f} ms  p95 {s['p95']:7.1f} ms")
    print(f"  mean |compiled - eager| per pair: max {max(diffs):.2e} px, mean {np.mean(diffs):.2e} px")


if __name__ == "__main__":
    main()
