"""`lga explain`: saliency maps of CLIP ViT students (pre-trained vs fine-tuned) on images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lga.errors import ConfigError, LgaError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="saliency maps (attention rollout, Grad-CAM) of students side by side",
        description="For each image, one PNG: the image, then per student its attention rollout "
        "and Grad-CAM (for the predicted class prompt) overlays, with the class probabilities in "
        "the titles. A --student is a hub id, a model directory or a run directory (its model/, "
        "or the base checkpoint of a zero-shot run). Example: lga explain --student "
        "openai/clip-vit-large-patch14 --student runs/lga-l14 bird.jpg --out explain",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    p.add_argument(
        "--student",
        metavar="CKPT",
        action="append",
        required=True,
        dest="students",
        help="a student (repeat: pre-trained first, then fine-tuned)",
    )
    p.add_argument(
        "--label",
        metavar="NAME",
        action="append",
        default=None,
        dest="labels",
        help="a name per --student for the figures (default: from the run or folder)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument(
        "--class-names",
        nargs="+",
        default=None,
        help="classes (default: the dataset config's, e.g. landbird waterbird)",
    )
    p.add_argument(
        "--templates",
        nargs="+",
        default=None,
        help="class prompt templates with {} (default: the dataset config's)",
    )
    p.add_argument(
        "--dataset-config",
        default=None,
        help="shipped name or YAML giving classes and templates (default: the first "
        "run's, else waterbirds)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.set_defaults(func=_run)


def resolve_student(spec: str) -> tuple[str, str, Any]:
    """(checkpoint to load, default label, run config: FitConfig, EvalRunConfig or None) for a
    --student value."""
    from lga.report.runs import fine_tunes, load_run
    from lga.rundir import RunDir

    path = Path(spec)
    rd = RunDir(path)
    if rd.finished:
        run = load_run(path)
        label = run.method if fine_tunes(run.method) else "pre-trained"
        # A frozen method's image encoder is its base checkpoint's (a head, if any, aside).
        return (rd.model_source() if fine_tunes(run.method) else run.base), label, run.config
    if rd.model_dir is not None:
        return str(rd.model_dir), path.name, None
    name = path.parent.name if path.name == "model" else path.name
    return spec, name or spec, None


def _labels(defaults: list[str], given: list[str] | None) -> list[str]:
    if given is not None:
        if len(given) != len(defaults):
            raise ConfigError(f"{len(given)} --label for {len(defaults)} --student")
        return given
    out: list[str] = []
    for name in defaults:
        out.append(name if name not in out else f"{name} #{len(out) + 1}")
    return out


def _stems(paths: list[Path]) -> list[str]:
    stems: list[str] = []
    for p in paths:
        stems.append(p.stem if p.stem not in stems else f"{p.stem}-{len(stems) + 1}")
    return stems


def _image(path: Path):
    """The image at ``path``, or an error line naming the file."""
    from lga.data.images import ImageLoadError, load_rgb

    try:
        return load_rgb(path)
    except ImageLoadError as e:
        raise LgaError(f"{path}: {e}") from None


def _run(args: argparse.Namespace) -> int:
    from lga.config import StudentConfig
    from lga.data.dataset_config import load_dataset_config
    from lga.report.explain import write_saliency_figures
    from lga.student.model import load_student

    resolved = [resolve_student(s) for s in args.students]
    data = next((cfg.data for _, _, cfg in resolved if cfg is not None), None)  # a run's
    spec = load_dataset_config(
        args.dataset_config or (data.dataset_config if data else None),
        Path(data.root) if data else None,
    )
    classes = args.class_names or spec.classes
    templates = args.templates or spec.class_templates
    if any("{}" not in t for t in templates):
        raise ConfigError(f"every template needs a {{}} for the class name: {templates}")
    labels = _labels([label for _, label, _ in resolved], args.labels)
    images = [_image(p) for p in args.images]  # a bad file fails before any model
    students = [
        (label, load_student(StudentConfig(spec=ckpt, device=args.device)))
        for label, (ckpt, _, _) in zip(labels, resolved, strict=True)
    ]
    paths = write_saliency_figures(
        students,
        images,
        _stems(args.images),
        args.out,
        class_names=classes,
        templates=templates,
        titles=[p.name for p in args.images],
    )
    for p in paths:
        print(f"wrote {p}")
    (args.out / "explain.json").write_text(
        json.dumps(
            {
                "students": dict(zip(labels, [c for c, _, _ in resolved], strict=True)),
                "classes": classes,
                "templates": templates,
            },
            indent=2,
        )
        + "\n"
    )
    return 0
