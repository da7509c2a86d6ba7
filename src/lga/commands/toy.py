"""`lga pretrain-toy`: rebuild the small CLIP that the embedded demo starts from."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain-toy",
        help="pretrain the demo's small CLIP on a synthetic, web-biased caption corpus",
        description="Render a synthetic caption corpus (biased like web data: waterbirds mostly "
        "on water) and pretrain a ~1.5M-parameter CLIP on it (about 3-5 minutes on 2 CPU cores). "
        "The package ships the result; this command documents and reproduces it. "
        "Example: lga pretrain-toy --out toy-clip",
    )
    p.add_argument("--out", type=Path, required=True, help="directory for save_pretrained")
    p.add_argument("--seed", type=int, default=None, help="corpus and init seed (default: shipped)")
    p.add_argument("--n-images", type=int, default=None, help="corpus size (default: shipped)")
    p.add_argument("--epochs", type=int, default=None)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lga.toy import ToyConfig, pretrain_toy

    changes = {k: v for k, v in (("seed", args.seed), ("n_images", args.n_images),
                                 ("epochs", args.epochs)) if v is not None}  # fmt: skip
    out = pretrain_toy(args.out, ToyConfig(**changes))
    print(f"wrote the toy CLIP to {out}")
    return 0
