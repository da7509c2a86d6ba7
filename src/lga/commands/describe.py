"""`lga describe`: ask a teacher about every image of a split, into a description store."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lga.teacher import DescribeSummary

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  lga describe --data synth-wb --teacher oracle --store synth-wb/descriptions.sqlite
  lga describe --data synth-wb --teacher oracle --store s.sqlite --teacher-option faults=llava-like
  lga describe --data waterbird_complete95_forest2water2 --teacher hf:llava-hf/llava-1.5-7b-hf \\
      --store wb.sqlite --limit 2000 --batch-size 16
  OPENAI_API_KEY=... lga describe --data DIR --store wb.sqlite --concurrency 32 \\
      --teacher openai:http://localhost:8000/v1#llava-hf/llava-1.5-7b-hf
  lga describe ... --teacher openai:... --teacher-option top_k=1 --teacher-option 'stop=["\\n"]'
  lga describe ... --shard 0/4 --store wb-0.sqlite   # then: lga store merge wb.sqlite wb-*.sqlite
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "describe",
        help="describe images with a multimodal teacher into a description store",
        description="Ask the teacher each prompt about each image. Answers are committed as they "
        "arrive; a rerun skips finished items and retries failed ones. Several runs may describe "
        "into one store at once: each item is claimed before it is asked, so they share the "
        "work. Exit status 1 when items failed (counted by kind) or the run stopped early.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="dataset folder (metadata.csv)")
    p.add_argument(
        "--teacher",
        required=True,
        help="hf:<hub id or folder> (LLaVA, Qwen-VL, Idefics3/SmolVLM, Gemma 3, PaliGemma, "
        "InternVL...: lga.teacher.families) | openai:<base_url>#<model> | oracle (synth datasets)",
    )
    p.add_argument("--store", type=Path, required=True, help="description store file (SQLite)")
    p.add_argument(
        "--dataset-config",
        default=None,
        help="shipped name or YAML file; default: DATA/dataset.yaml if present, else waterbirds",
    )
    p.add_argument(
        "--prompts",
        default=None,
        help="prompt set name or YAML file (default: the "
        "dataset's prompt_set, else the set named like the dataset, else generic)",
    )
    p.add_argument(
        "--only-prompts", default=None, metavar="NAME,...", help="ask only these prompts of the set"
    )
    p.add_argument("--split", default="train", choices=["train", "val", "test", "all"])
    p.add_argument("--limit", type=int, default=None, help="only the first N images (by img_id)")
    p.add_argument("--shard", default=None, metavar="i/N", help="only images with img_id %% N == i")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8, help="images per generate call (hf)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (openai)")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds a request waits for the server, per connect or read (openai; default 30)",
    )
    p.add_argument(
        "--item-deadline",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds an item may take in all, retries included; bounds a hung server "
        "(openai; default 60)",
    )
    p.add_argument("--max-retries", type=int, default=5, help="retries per item (openai)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay, s (openai)")
    p.add_argument(
        "--max-connect-failures",
        type=int,
        default=10,
        metavar="K",
        help="stop after K refused or unresolvable connections in a row (openai; default 10); "
        "the server is also checked once (GET /models) before the first item",
    )
    p.add_argument(
        "--max-consecutive-failures",
        type=int,
        default=20,
        metavar="N",
        help="stop after N failed items in a row (default 20): a broken setup does not fill "
        "the store with failures",
    )
    p.add_argument(
        "--claim-lease",
        type=float,
        default=120.0,
        metavar="S",
        help="several describe runs may share one store: each claims an item before asking; "
        "a claim of a run that died expires after S seconds (default 120)",
    )
    p.add_argument(
        "--teacher-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra field of every request body (openai; repeatable), VALUE read as JSON "
        "when it parses (top_k=7, repetition_penalty=1.1, skip_special_tokens=false, "
        "'stop=[\"\\n\"]'), else as a string. Part of the teacher settings in the store: other "
        "options are another variant. Not model or messages (lga sets them), max_tokens "
        "(--max-new-tokens) or temperature (always 0, greedy). For the oracle: its fault "
        "rates, faults=llava-like (a preset), species_error, background_bias, object_leak, "
        "background_error (each in [0, 1]) and fault_scale (multiplies them)",
    )
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the API key (default: OPENAI_API_KEY, optional)",
    )
    p.add_argument("--visual-prompt", default="none", choices=["none", "grid", "circle"])
    p.add_argument(
        "--boxes",
        type=Path,
        default=None,
        help="CSV img_id,x0,y0,x1,y1 of object boxes (circle; synth datasets have them)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (hf)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the checkpoint's own Python code (hf)",
    )
    p.add_argument("--skip-bad-rows", action="store_true", help="leave out faulty metadata rows")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_describe)


def _boxes(args: argparse.Namespace):
    from lga.data.attributes import attributes_path
    from lga.errors import ConfigError
    from lga.teacher.oracle import load_attribute_boxes
    from lga.teacher.visual import load_boxes

    if args.boxes is not None:
        return load_boxes(args.boxes)
    if attributes_path(args.data).is_file():
        return load_attribute_boxes(args.data)
    raise ConfigError(
        "--visual-prompt circle needs object boxes: give --boxes FILE "
        "(CSV img_id,x0,y0,x1,y1 in pixels)"
    )


def _describe(args: argparse.Namespace) -> int:
    from lga.data.dataset import load_dataset
    from lga.data.dataset_config import load_dataset_config
    from lga.teacher import (
        DescribeStopped,
        TeacherOptions,
        VisualPrompt,
        describe_with,
        parse_shard,
        parse_teacher_spec,
        resolve_prompts,
        select_images,
    )
    from lga.teacher.openai_compat import parse_request_options
    from lga.teacher.runner import check_boxes

    spec = parse_teacher_spec(args.teacher)
    request_options = parse_request_options(args.teacher_option)
    shard = parse_shard(args.shard) if args.shard else None
    visual = VisualPrompt(args.visual_prompt)
    ds_spec = load_dataset_config(args.dataset_config, args.data)
    only = args.only_prompts.split(",") if args.only_prompts else None
    prompts = resolve_prompts(ds_spec, args.prompts, only=only)
    # Images are decoded by the teacher; a bad one becomes a failed row, not a refused run.
    ds = load_dataset(
        args.data,
        ds_spec,
        splits=[args.split],
        check_images=False,
        skip_bad_rows=args.skip_bad_rows,
    )
    ds = select_images(ds, split=args.split, limit=args.limit, shard=shard)
    boxes = None
    if visual is VisualPrompt.CIRCLE:
        boxes = _boxes(args)
        check_boxes(ds, boxes)  # before loading a model
    options = TeacherOptions(
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        timeout=args.timeout,
        item_deadline=args.item_deadline,
        max_retries=args.max_retries,
        backoff=args.backoff,
        max_connect_failures=args.max_connect_failures,
        request_options=request_options,
        api_key_env=args.api_key_env,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
    )
    where = f" shard {shard}" if shard else ""

    def announce(teacher) -> None:
        print(
            f"describe: {len(ds)} image(s){where} x {len(prompts)} prompt(s) "
            f"({', '.join(p.name for p in prompts)}) with {teacher.id} -> {args.store}",
            file=sys.stderr,
        )

    try:
        summary = describe_with(
            spec,
            options,
            ds,
            args.store,
            prompts,
            data_root=args.data,
            announce=announce,
            visual_prompt=visual,
            boxes=boxes,
            progress=not args.no_progress,
            max_consecutive_failures=args.max_consecutive_failures,
            claim_lease_s=args.claim_lease,
        )
    except DescribeStopped as e:
        _report(e.summary, args.store)
        raise  # the CLI prints the reason and exits 1
    _report(summary, args.store)
    return 1 if summary.failed else 0


def _report(summary: DescribeSummary, store: Path) -> None:
    print(f"describe: {summary.line()}")
    failures = summary.failure_line()
    if failures:
        print(
            f"describe: {failures} (errors in `lga store export {store} --to X.jsonl`); "
            "rerun the same command to retry them",
            file=sys.stderr,
        )
