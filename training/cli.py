"""`wsvs-train`: synthetic drives, tags from annotations, iconic classifiers, training, evaluation, heatmap masks, the
ablation."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

# The lite classifier's defaults, repeated from wsvs_training.heatmaps so `--help` needs no torch import.
LITE_ICONIC_SIZE, LITE_ICONIC_WINDOW, LITE_ICONIC_HIDDEN = 160, 3, 0
DEFAULT_ABLATION_CONFIG = Path(__file__).resolve().parent / "configs" / "synth_ablation.yaml"


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` strings -> {key: YAML-parsed value}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value (e.g. --set iterations=100), got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--set {pair}: the value is not valid YAML (quote strings with ': ' in them)") from None
    return out


def _cmd_synth(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from wsvs_training.synth.drives import main as synth_main

    return synth_main(list(rest))


def _cmd_tags(args: argparse.Namespace, command: str) -> int:
    from wsvs_ros.labels import get_label_set
    from wsvs_ros.spec import ModelSpec
    from wsvs_training.datasets.clips import write_tags_from_annotations
    from wsvs_training.datasets.layouts import ANNOTATION_LABEL_SETS, OWN_TAGS_FOLDER, dataset_clips
    from wsvs_training.datasets.video import write_video_tags

    # The annotations decode to the dataset's own class ids (the video layout's labels_net/ are Cityscapes labelIds,
    # the stills are CamVid's), so the tags name that set's classes (training translates: `tags_label_set`).
    labels = get_label_set(ANNOTATION_LABEL_SETS[args.dataset])
    # A clip's tags come from its annotated frame alone; the flow window (L, alignment) only decides which neighbouring
    # CamVid frames the clip lists, so the spec's defaults serve whatever model is trained later.
    spec = ModelSpec(labels.name, labels.names)
    clips = dataset_clips(
        args.dataset, args.data, args.split, spec=spec, label_set=labels, require_tags=False, tags_dir=args.tags
    )
    if args.dataset in OWN_TAGS_FOLDER:
        out = args.tags or args.data / args.split
        write_video_tags(out, clips, labels, min_fraction=args.min_fraction)
    else:
        out = args.data / "tags" / args.split
        write_tags_from_annotations(args.data, args.split, clips, labels, min_fraction=args.min_fraction)
    print(f"wrote {len(clips)} tag files to {out}")
    return 0


def _cmd_classifiers(args: argparse.Namespace, command: str) -> int:
    import torch

    from wsvs_ros.labels import get_label_set
    from wsvs_training.heatmaps import save_iconic_classifier, train_iconic_classifier

    torch.set_num_threads(args.threads)
    if args.backbone == "efficientnet-lite0":
        return _lite_classifiers(args, command)
    if args.folders is not None:
        raise SystemExit("--folders maps iconic folders to classes for --backbone efficientnet-lite0 only")
    names = args.classes or list(get_label_set(args.label_set).names)
    model, info = train_iconic_classifier(args.iconic, names, epochs=args.epochs, seed=args.seed, mixed=args.mixed)
    info["command"] = command
    save_iconic_classifier(args.out, model, names, info)
    print(f"wrote {args.out}: {len(names)} one-vs-all outputs, train accuracy {info['train_accuracy']:.3f}")
    return 0


def _lite_classifiers(args: argparse.Namespace, command: str) -> int:
    from wsvs_training.heatmaps import load_iconic_folders, save_lite_iconic_classifier, train_lite_iconic_classifier

    if args.folders is None:
        raise SystemExit("--backbone efficientnet-lite0 needs --folders: a YAML file naming each class's folders")
    try:
        folders = load_iconic_folders(args.folders)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if args.classes:
        folders = {name: folders[name] for name in args.classes}
    frames = []
    if args.frames is not None:
        frames = sorted(p for p in args.frames.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not frames:
            raise SystemExit(f"--frames {args.frames}: no .png / .jpg frames there")
    head, info = train_lite_iconic_classifier(
        args.iconic,
        folders,
        size=args.size,
        window=args.window,
        hidden=args.hidden,
        epochs=args.epochs,
        seed=args.seed,
        per_folder=args.per_folder,
        frames=frames,
        frame_size=args.frame_size,
    )
    info["command"] = command
    save_lite_iconic_classifier(args.out, head, folders, size=args.size, window=args.window, info=info)
    print(f"wrote {args.out}: {len(folders)} one-vs-all heads on EfficientNet-Lite0, train accuracy "
          f"{info['train_accuracy']:.3f}")  # fmt: skip
    return 0


def _cmd_fit(args: argparse.Namespace, command: str) -> int:
    from wsvs_training.distributed import world_from_env
    from wsvs_training.train import fit, load_config

    config = load_config(args.config, **_overrides(args.set))
    path = fit(config, command=command)
    if world_from_env().is_main:  # under torchrun, rank 0 wrote it
        print(f"wrote {path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace, command: str) -> int:
    import torch

    from wsvs_ros.labels import get_label_set
    from wsvs_ros.model.checkpoint import load_checkpoint
    from wsvs_training.datasets.layouts import ANNOTATION_LABEL_SETS, dataset_clips
    from wsvs_training.evaluate import evaluate_checkpoint

    torch.set_num_threads(args.threads)
    spec = load_checkpoint(args.checkpoint).spec
    cache = args.cache or Path(args.out) / "cache"
    # Scoring reads the label maps, never the tags: clips load without tags files, in the annotations' own set.
    annotations = get_label_set(ANNOTATION_LABEL_SETS.get(args.dataset, spec.label_set))
    clips = dataset_clips(
        args.dataset, args.data, args.split, spec=spec, label_set=annotations, cache=cache, tags_dir=args.tags,
        require_tags=False,
    )  # fmt: skip
    metrics = evaluate_checkpoint(
        args.checkpoint, clips, out=args.out, cache_dir=cache, crf=args.crf, annotations=annotations,
        skip_warming=args.dataset != "stills",  # a still's flow window is all warming zeros, as on a first frame
    )  # fmt: skip
    summary = {k: metrics[k] for k in ("miou", "mean_class_acc", "global_acc", "frames")}
    print(json.dumps({**summary, "per_class_iou": metrics["per_class_iou"]}, indent=2))
    return 0


def _cmd_heatmaps(args: argparse.Namespace, command: str) -> int:
    import torch

    from wsvs_training.datasets.stills import stills
    from wsvs_training.heatmap_quality import format_table, mask_quality
    from wsvs_training.heatmaps import heatmap_source
    from wsvs_training.train import load_clips, load_config

    config = load_config(args.config, **_overrides(args.set))
    if config.iconic is None and config.vgg16 is None and config.imagenet is None:
        raise SystemExit(f"{args.config} names no heatmap classifiers: set `iconic`, `vgg16` or `imagenet`")
    if (args.stills is None) != (args.data is None):
        raise SystemExit("--stills and --data go together: --stills camvid --data ../shared/data/camvid")
    torch.set_num_threads(config.threads)
    source = heatmap_source(
        config.labels,
        iconic_path=config.iconic,
        vgg16_path=config.vgg16,
        imagenet=config.imagenet,
        scale=config.heatmap_scale,
    )
    spec = config.model_spec()
    if args.stills is not None:
        clips, truth = stills(args.stills, args.data, args.split, config.labels)
        quality = mask_quality(source, clips, spec, fraction=config.mask_fraction, every=args.every, truth=truth)
    else:
        quality = mask_quality(source, load_clips(config, args.split), spec, fraction=config.mask_fraction,
                               every=args.every)  # fmt: skip
    print(format_table(quality))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": command, "split": args.split, "every": args.every, "stills": args.stills, **quality}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _cmd_stride_bound(args: argparse.Namespace, command: str) -> int:
    from wsvs_training.evaluate import output_stride_bound, percent
    from wsvs_training.train import load_clips, load_config

    config = load_config(args.config, **_overrides(args.set))
    spec = config.model_spec()
    bounds = output_stride_bound(load_clips(config, args.split), spec, args.strides)
    names = config.labels.names
    print(f"ideal score maps at {spec.input_width}x{spec.input_height}, split {args.split}: mIoU and per-class IoU")
    print(f"{'stride':>6} {'grid':>7} {'mIoU':>6} " + " ".join(f"{n[:10]:>10}" for n in names))
    for s, m in bounds.items():
        ious = " ".join(f"{percent(m['per_class_iou'][n]):>10}" for n in names)
        print(f"{s:>6} {m['cells'][1]:>3}x{m['cells'][0]:<3} {percent(m['miou']):>6} {ious}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": command, "split": args.split, "strides": {str(s): m for s, m in bounds.items()}}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _cmd_ablation(args: argparse.Namespace, command: str) -> int:
    from wsvs_training.ablation import SETUPS, run_ablation
    from wsvs_training.distributed import world_from_env
    from wsvs_training.train import load_config

    if world_from_env().distributed:  # each setup's evaluation and tables would be written by every process
        raise SystemExit("wsvs-train ablation runs as one process: start it without torchrun")
    base = load_config(args.config, **_overrides(args.set))
    rows = run_ablation(base, args.out, command=command, eval_split=args.split, setups=args.setups or SETUPS)
    for r in rows:
        print(f"{r['setup']:>20}: mIoU {100 * r['miou']:.1f}%  class acc {100 * r['mean_class_acc']:.1f}%  "
              f"global {100 * r['global_acc']:.1f}%")  # fmt: skip
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT (e.g. 480x352), got {text}")
    return int(width), int(height)


def _command(argv: Sequence[str]) -> str:
    """The command line as typed, recorded in what it writes (checkpoints, classifier files, tables)."""
    return shlex.join(["wsvs-train", *argv])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsvs-train", description="Weakly-supervised training of the two-stream net.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "synth", help="write synthetic drives (arguments of `python -m wsvs_training.synth`)", add_help=False
    )

    p = sub.add_parser("tags", help="derive the video-level tags of clips from their annotations / label maps")
    p.add_argument("--dataset", required=True, choices=("cityscapes", "camvid", "video", "stills"))
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="dataset root; writes DATA/tags/SPLIT/{clip}.json (video: DATA/SPLIT/{clip}.tags.json)",
    )
    p.add_argument("--split", required=True)
    p.add_argument(
        "--tags", type=Path, help="video, stills: write the {clip}.tags.json files here instead (read-only data)"
    )
    p.add_argument(
        "--min-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="tag a class only where it covers at least this fraction of a clip's labelled pixels (default 0; "
        "network-made label maps such as labels_net/: 1e-4 drops their stray pixels)",
    )

    p = sub.add_parser("classifiers", help="train the one-vs-all heatmap classifiers on iconic images")
    p.add_argument("--iconic", required=True, type=Path, help="folder with one sub-folder of images per class")
    p.add_argument("--out", required=True, type=Path, help="classifier file to write")
    p.add_argument("--label-set", default="drive", help="label set whose classes get classifiers (default drive)")
    p.add_argument("--classes", nargs="*", help="only these classes (default: all of the label set)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--mixed",
        nargs="*",
        default=[],
        metavar="CLASS",
        help="classes whose images also show other classes (e.g. poles, people): used as their positives only",
    )
    p.add_argument("--backbone", choices=("vgg-small", "efficientnet-lite0"), default="vgg-small",
                   help="vgg-small: a small VGG trunk trained from scratch (synthetic drives); efficientnet-lite0: "
                   "one-vs-all heads on its frozen ImageNet features (real photos, needs --folders)")  # fmt: skip
    p.add_argument("--folders", type=Path, help="YAML: `classes: {road: [imagenet_road, ...], ...}` (lite only)")
    p.add_argument("--size", type=int, default=LITE_ICONIC_SIZE, help="lite: photos resized to this square (px)")
    p.add_argument("--window", type=int, default=LITE_ICONIC_WINDOW, help="lite: cells each head averages (odd)")
    p.add_argument("--hidden", type=int, default=LITE_ICONIC_HIDDEN, help="lite: hidden units of the heads (0: linear)")
    p.add_argument("--per-folder", type=_positive_int, help="lite: only the first N photos of each folder")
    p.add_argument("--frames", type=Path, help="lite: a folder of unlabelled street frames for one self-training round")
    p.add_argument("--frame-size", type=_size, default=(480, 352), help="lite: WxH the frames are resized to")
    p.add_argument("--threads", type=int, default=2)

    p = sub.add_parser("fit", help="train from a YAML config (resumes from its out folder)")
    p.add_argument("config", type=Path)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")

    p = sub.add_parser("evaluate", help="mIoU and friends of a checkpoint on annotated frames")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--dataset", choices=("synth", "cityscapes", "camvid", "video", "stills"), default="synth")
    p.add_argument("--split", default="val")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cache", type=Path, help="flow (and video frames) cache folder (default OUT/cache)")
    p.add_argument("--tags", type=Path, help="video, stills: folder of the {clip}.tags.json files (default: beside)")
    p.add_argument("--crf", action="store_true", help="refine with a dense CRF before scoring (paper 4.2)")
    p.add_argument("--threads", type=int, default=2)

    p = sub.add_parser("heatmaps", help="precision / recall of a config's heatmap masks B_k against annotations")
    p.add_argument("config", type=Path, help="training config (its iconic, vgg16, heatmap_scale, mask_fraction)")
    p.add_argument("--split", default="val", help="annotated split to score on (default val)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="every N-th annotated frame of each clip")
    p.add_argument("--out", type=Path, help="also write the figures and pixel counts to this JSON file")
    p.add_argument(
        "--stills",
        choices=("camvid", "cityscapes"),
        help="score on annotated real stills instead of the config's dataset: CamVid (--split train / test) or the "
        "Cityscapes snippets (--split all)",
    )
    p.add_argument("--data", type=Path, help="root of the --stills dataset")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")

    p = sub.add_parser("stride-bound", help="mIoU of ideal score maps at each output stride (what the stride costs)")
    p.add_argument("config", type=Path, help="training config (its dataset, data and input size)")
    p.add_argument("--split", default="val", help="annotated split (default val)")
    p.add_argument("--strides", nargs="+", type=_positive_int, default=[32, 16, 8], metavar="S")
    p.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")

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
        "tags": _cmd_tags,
        "classifiers": _cmd_classifiers,
        "fit": _cmd_fit,
        "evaluate": _cmd_evaluate,
        "heatmaps": _cmd_heatmaps,
        "stride-bound": _cmd_stride_bound,
        "ablation": _cmd_ablation,
    }
    try:
        return handlers[args.command](args, _command(argv))
    except (ValueError, OSError) as e:  # a config, dataset or file problem: the message names it and the fix
        print(f"wsvs-train {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
