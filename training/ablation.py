"""The paper's ablation (4.3.1, Tables 2-3) on synthetic drives: `wsvs-train ablation --config BASE.yaml --out DIR`.

Four setups trained on the same clips from the same base config, evaluated on the held-out split:
- No-Heatmap: single stream, tag loss (Eq. 2 + 3) and CRF-KL, no heatmap loss.
- Foreground-Heatmap: single stream, Eq. 4 only for the "thing" classes car, person and pole (the classes an
  ImageNet classifier would cover; here their heatmaps come from the iconic classifiers like every class).
- Our-Heatmap: single stream, Eq. 4 for all classes.
- Two-Stream: the two-stream network with all losses.
"Single stream" zeroes and freezes the flow stream (`wsvs_training.train.disable_flow_stream`): its output is exactly
0, so the network is the RGB stream with its two heads; everything else (data, iterations, optimiser, seed) is shared.
Writes DIR/{setup}/ (checkpoint, log, eval/), DIR/ablation.json and a Table-2-style DIR/ablation.md.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsvs_training.evaluate import evaluate_checkpoint, percent
from wsvs_training.train import TrainConfig, fit, load_clips

THING_CLASSES = ("car", "person", "pole")

SETUPS: dict[str, dict[str, Any]] = {
    "No-Heatmap": {"single_stream": True, "heatmap_weight": 0.0},
    "Foreground-Heatmap": {"single_stream": True, "heatmap_classes": THING_CLASSES},
    "Our-Heatmap": {"single_stream": True},
    "Two-Stream": {},
}


def setup_config(base: TrainConfig, name: str, out: Path) -> TrainConfig:
    """The base config changed as setup `name` says, training into out/{name}."""
    return dataclasses.replace(base, out=str(out / name), cache=str(base.cache_dir), **SETUPS[name])


def run_ablation(
    base: TrainConfig,
    out: str | Path,
    *,
    command: str,
    eval_split: str = "val",
    setups: Sequence[str] = tuple(SETUPS),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train and evaluate the chosen setups (resuming partial runs), then write ablation.json and ablation.md with
    a row for every setup evaluated so far in `out` (so setups may run in separate processes).

    Raises:
        ValueError: an unknown setup name.
    """
    unknown = sorted(set(setups) - set(SETUPS))
    if unknown:
        raise ValueError(f"unknown ablation setup(s) {unknown}; choose from {list(SETUPS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clips = load_clips(base, eval_split)
    for name in setups:
        config = setup_config(base, name, out)
        checkpoint = fit(config, command=command, progress=progress)
        evaluate_checkpoint(checkpoint, clips, out=Path(config.out) / "eval", cache_dir=config.cache_dir)
    rows = []
    for name in SETUPS:
        metrics_path = out / name / "eval" / "metrics.json"
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        rows.append(
            {
                "setup": name,
                "miou": metrics["miou"],
                "mean_class_acc": metrics["mean_class_acc"],
                "global_acc": metrics["global_acc"],
                "per_class_iou": metrics["per_class_iou"],
                "frames": metrics["frames"],
                "checkpoint": metrics["checkpoint"],
                "changes": {k: list(v) if isinstance(v, tuple) else v for k, v in SETUPS[name].items()},
            }
        )
    write_tables(out, rows, base=base, command=command, eval_split=eval_split)
    return rows


def write_tables(out: Path, rows: list[dict[str, Any]], *, base: TrainConfig, command: str, eval_split: str) -> None:
    """ablation.json (rows + base config + command) and ablation.md (Table 2 layout plus per-class IoU)."""
    (out / "ablation.json").write_text(
        json.dumps(
            {"command": command, "eval_split": eval_split, "base_config": base.to_dict(), "rows": rows}, indent=2
        )
        + "\n"
    )
    classes = list(rows[0]["per_class_iou"]) if rows else []
    lines = [
        "# Ablation on synthetic drives (paper Table 2 layout)",
        "",
        f"Command: `{command}`",
        "",
        f"Trained on `{base.data}` split `{base.split}`, evaluated on split `{eval_split}` "
        f"({rows[0]['frames'] if rows else 0} frames with full flow windows); {base.iterations} iterations, "
        f"batch {base.batch_size}, optimiser preset `{base.optimizer}` ({base.preset().describe()}), "
        f"width {base.width}, "
        f"output stride {base.output_stride}, {base.input_width}x{base.input_height}, "
        f"L={base.flow_length} ({base.window}), seed {base.seed}.",
        "",
        "| Setup | Mean IoU | Mean Class Acc. | Global Acc. |",
        "|---|---|---|---|",
        *(
            f"| {r['setup']} | {percent(r['miou'])} | {percent(r['mean_class_acc'])} | {percent(r['global_acc'])} |"
            for r in rows
        ),
        "",
        "Per-class IoU:",
        "",
        "| Setup | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
        *(f"| {r['setup']} | " + " | ".join(percent(r["per_class_iou"][c]) for c in classes) + " |" for r in rows),
        "",
    ]
    (out / "ablation.md").write_text("\n".join(lines))
