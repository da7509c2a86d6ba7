"""`lga pretrain-toy`: rebuild the small CLIP that the embedded demo starts from."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain-toy",
        help="pretrain the demo's small CLIP on a synthetic, web-biased caption corpus",
        description="Render a synthetic caption corpus (biased like web data: waterbirds mostly "
        "on water; class words learned from habitats) and pretrain a ~1.5M-parameter CLIP on it, "
        "with "
        "an auxiliary species objective on background-balanced scenes (about 20-25 minutes on one "
        "thread). The result is probed on the demo world (balanced probe, zero-shot worst group: "
        "lga_toy.json). "
        "The package ships the result; this command documents and reproduces it. "
        "Example: lga pretrain-toy --out toy-clip",
    )
    p.add_argument("--out", type=Path, required=True, help="directory for save_pretrained")
    p.add_argument("--seed", type=int, default=None, help="corpus and init seed (default: shipped)")
    p.add_argument("--n-images", type=int, default=None, help="corpus size (default: shipped)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1, as the shipped toy was built: float sums, and with them the "
        "weights, depend on the thread count)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lga.workflows.toy import PROVENANCE_FILE, ToyConfig, pretrain_toy

    changes = {k: v for k, v in (("seed", args.seed), ("n_images", args.n_images),
                                 ("epochs", args.epochs)) if v is not None}  # fmt: skip
    import torch

    torch.set_num_threads(args.threads)
    out = pretrain_toy(args.out, ToyConfig(**changes), progress=not args.no_progress)
    made = json.loads((out / PROVENANCE_FILE).read_text())
    print(f"wrote the toy CLIP to {out} ({made['train_seconds']} s of training)")
    if "probe_accuracy" in made:
        probe, zs = made["probe_accuracy"], made["zero_shot_worst_group"]
        print(f"on the demo world's scenes: balanced probe {probe:.3f}, "
              f"zero-shot worst group {zs:.3f} ({out / PROVENANCE_FILE})")  # fmt: skip
    return 0
