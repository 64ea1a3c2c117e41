"""`wsvs-train`: synthetic drives, iconic classifiers, training, evaluation and the ablation."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

DEFAULT_ABLATION_CONFIG = Path(__file__).resolve().parent / "configs" / "synth_ablation.yaml"


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` strings -> {key: YAML-parsed value}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value (e.g. --set iterations=100), got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _cmd_synth(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from training.synth import main as synth_main

    return synth_main(list(rest))


def _cmd_classifiers(args: argparse.Namespace, command: str) -> int:
    import torch

    from training.heatmaps import save_iconic_classifier, train_iconic_classifier
    from wsvs_ros.labels import get_label_set

    torch.set_num_threads(args.threads)
    names = args.classes or list(get_label_set(args.label_set).names)
    model, info = train_iconic_classifier(args.iconic, names, epochs=args.epochs, seed=args.seed)
    info["command"] = command
    save_iconic_classifier(args.out, model, names, info)
    print(f"wrote {args.out}: {len(names)} one-vs-all outputs, train accuracy {info['train_accuracy']:.3f}")
    return 0


def _cmd_fit(args: argparse.Namespace, command: str) -> int:
    from training.train import fit, load_config

    config = load_config(args.config, **_overrides(args.set))
    path = fit(config, command=command)
    print(f"wrote {path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace, command: str) -> int:
    import torch

    from training.data import camvid_clips, cityscapes_clips, synth_clips
    from training.evaluate import evaluate_checkpoint
    from wsvs_ros.labels import get_label_set
    from wsvs_ros.model.checkpoint import load_checkpoint

    torch.set_num_threads(args.threads)
    spec = load_checkpoint(args.checkpoint).spec
    labels = get_label_set(spec.label_set)
    if args.dataset == "synth":
        clips = synth_clips(args.data, args.split, label_set=labels)
    elif args.dataset == "cityscapes":
        clips = cityscapes_clips(args.data, args.split, label_set=labels)
    else:
        clips = camvid_clips(args.data, args.split, spec=spec, label_set=labels)
    cache = args.cache or Path(args.out) / "cache"
    metrics = evaluate_checkpoint(args.checkpoint, clips, out=args.out, cache_dir=cache, crf=args.crf)
    summary = {k: metrics[k] for k in ("miou", "mean_class_acc", "global_acc", "frames")}
    print(json.dumps({**summary, "per_class_iou": metrics["per_class_iou"]}, indent=2))
    return 0


def _cmd_ablation(args: argparse.Namespace, command: str) -> int:
    from training.ablation import SETUPS, run_ablation
    from training.train import load_config

    base = load_config(args.config, **_overrides(args.set))
    rows = run_ablation(base, args.out, command=command, eval_split=args.split, setups=args.setups or SETUPS)
    for r in rows:
        print(f"{r['setup']:>20}: mIoU {100 * r['miou']:.1f}%  class acc {100 * r['mean_class_acc']:.1f}%  "
              f"global {100 * r['global_acc']:.1f}%")  # fmt: skip
    return 0


def _command(argv: Sequence[str]) -> str:
    """The command line as typed, recorded in what it writes (checkpoints, classifier files, tables)."""
    return shlex.join(["wsvs-train", *argv])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsvs-train", description="Weakly-supervised training of the two-stream net.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("synth", help="write synthetic drives (arguments of `python -m training.synth`)", add_help=False)

    p = sub.add_parser("classifiers", help="train the one-vs-all heatmap classifiers on iconic images")
    p.add_argument("--iconic", required=True, type=Path, help="folder with one sub-folder of images per class")
    p.add_argument("--out", required=True, type=Path, help="classifier file to write")
    p.add_argument("--label-set", default="drive", help="label set whose classes get classifiers (default drive)")
    p.add_argument("--classes", nargs="*", help="only these classes (default: all of the label set)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)

    p = sub.add_parser("fit", help="train from a YAML config (resumes from its out folder)")
    p.add_argument("config", type=Path)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")

    p = sub.add_parser("evaluate", help="mIoU and friends of a checkpoint on annotated frames")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--dataset", choices=("synth", "cityscapes", "camvid"), default="synth")
    p.add_argument("--split", default="val")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cache", type=Path, help="flow cache folder (default OUT/cache)")
    p.add_argument("--crf", action="store_true", help="refine with a dense CRF before scoring (paper 4.2)")
    p.add_argument("--threads", type=int, default=2)

    p = sub.add_parser("ablation", help="train and evaluate the paper's four ablation setups")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--config", type=Path, default=DEFAULT_ABLATION_CONFIG, help="base config of every setup")
    p.add_argument("--split", default="val", help="held-out split to evaluate on")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override base config keys")
    p.add_argument("--setups", nargs="*", help="run only these setups (tables list every setup evaluated in OUT)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["synth"]:
        return _cmd_synth(argparse.Namespace(), argv[1:])
    args = build_parser().parse_args(argv)
    handlers = {
        "classifiers": _cmd_classifiers,
        "fit": _cmd_fit,
        "evaluate": _cmd_evaluate,
        "ablation": _cmd_ablation,
    }
    return handlers[args.command](args, _command(argv))


if __name__ == "__main__":
    sys.exit(main())
