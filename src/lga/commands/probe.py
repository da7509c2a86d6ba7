"""`lga probe`: what a CLIP checkpoint's image features know about the object, and its bias."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lga.commands.eval import add_student_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe",
        help="balanced linear probe and zero-shot bias of a checkpoint's frozen image features",
        description="Fit a logistic regression on frozen image embeddings of class x place "
        "balanced images (the validation split, sub-sampled to equal groups) and score it on "
        "other balanced images (the test split, likewise): how well the features separate the "
        "classes when the background says nothing. Also prints zero-shot accuracy per group on "
        "the same images and a probe fit on the (spuriously correlated) training split. "
        "Figures are fractions. Example: lga probe --data synth-wb --student toy",
    )
    p.add_argument("--data", type=Path, required=True, help="dataset folder holding metadata.csv")
    add_student_args(p)
    p.add_argument(
        "--dataset-config", default=None, help="shipped name or YAML; default: DIR/dataset.yaml"
    )
    p.add_argument("--fit-split", default="val", choices=["train", "val", "test"])
    p.add_argument("--score-split", default="test", choices=["train", "val", "test"])
    p.add_argument("--no-biased", action="store_true", help="skip the probe fit on train")
    p.add_argument("--l2", type=float, default=None, help="L2 penalty on standardised features")
    p.add_argument("--seed", type=int, default=0, help="seed of the balanced sub-sampling")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lga.config import StudentConfig
    from lga.evaluation.probe import DEFAULT_L2, probe_checkpoint

    if args.fit_split == args.score_split:
        from lga.errors import ConfigError

        raise ConfigError("--fit-split and --score-split must differ")
    student = StudentConfig(
        spec=args.student,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
    )
    r = probe_checkpoint(
        str(args.data),
        student,
        fit_split=args.fit_split,
        score_split=args.score_split,
        biased_split=None if args.no_biased else "train",
        l2=DEFAULT_L2 if args.l2 is None else args.l2,
        seed=args.seed,
        dataset_config=args.dataset_config,
        progress=not args.no_progress,
    )
    print(f"balanced probe ({r.n_fit} {args.fit_split} -> {r.n_score} {args.score_split} images): "
          f"accuracy {r.probe_accuracy:.3f}, worst group {r.probe_worst_group:.3f}")  # fmt: skip
    groups = ", ".join(f"{g} {a:.3f}" for g, a in r.zero_shot_group_accuracy.items())
    print(f"zero-shot on the same images: accuracy {r.zero_shot_accuracy:.3f}, "
          f"worst group {r.zero_shot_worst_group:.3f} ({groups})")  # fmt: skip
    if r.biased_probe_worst_group is not None:
        acc, worst = r.biased_probe_accuracy, r.biased_probe_worst_group
        print(f"probe fit on train ({r.n_biased_fit} images): accuracy {acc:.3f}, "
              f"worst group {worst:.3f}")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(r.as_dict(), indent=2) + "\n")
    return 0
