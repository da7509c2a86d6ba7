"""`lga export-text-encoder`: a fine-tuned text encoder as a stand-alone CLIPTextModel."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-text-encoder",
        help="save a fine-tuned run's text encoder (+ tokenizer) as a transformers CLIPTextModel",
        description="Write RUN/model's text tower as a CLIPTextModel directory with its tokenizer, "
        "loadable with CLIPTextModel.from_pretrained(OUT): a drop-in for a pipeline's text "
        "encoder of the same width (Stable Diffusion 1.x: a student fine-tuned from ViT-L/14). "
        "Example: lga export-text-encoder runs/lga-l14 exported/text_encoder",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a fine-tuned run (or a model directory)")
    p.add_argument("out", type=Path, metavar="OUT", help="output directory (created)")
    p.add_argument(
        "--with-projection",
        action="store_true",
        help="export CLIPTextModelWithProjection (text tower + projection, as SDXL's "
        "second text encoder)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lga.student.export import export_text_encoder

    out = export_text_encoder(args.run, args.out, with_projection=args.with_projection)
    cls = "CLIPTextModelWithProjection" if args.with_projection else "CLIPTextModel"
    print(
        f"wrote {out}: load it with {cls}.from_pretrained({str(out)!r}) and "
        f"AutoTokenizer.from_pretrained({str(out)!r})"
    )
    return 0
