"""`lga describe`: ask a teacher about every image of a split, into a description store."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lga.teacher.config import (
    DEFAULT_CLAIM_LEASE_S,
    DEFAULT_KEY_ENV,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    TeacherConfig,
    parse_request_options,
)

if TYPE_CHECKING:
    from lga.teacher import DescribeRun, DescribeSummary

_default = TeacherConfig.default
# TeacherConfig settings whose flag is not --<the setting's name>
FLAGS = {"spec": "--teacher", "request_options": "--teacher-option"}

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
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=_default("max_new_tokens"),
        help="answer length limit (hf, openai; default %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=_default("batch_size"),
        help="images per generate call (hf; default %(default)s)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=_default("concurrency"),
        help="requests in flight (openai; default %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=_default("timeout"),
        help="seconds a request waits for the server, per connect or read "
        "(openai; default %(default)s)",
    )
    p.add_argument(
        "--item-deadline",
        type=float,
        default=_default("item_deadline"),
        metavar="S",
        help="seconds an item may take in all, retries included; bounds a hung server "
        "(openai; default %(default)s)",
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=_default("max_retries"),
        help="retries per item (openai; default %(default)s)",
    )
    p.add_argument(
        "--backoff",
        type=float,
        default=_default("backoff"),
        help="first retry delay, s (openai; default %(default)s)",
    )
    p.add_argument(
        "--max-connect-failures",
        type=int,
        default=_default("max_connect_failures"),
        metavar="K",
        help="stop after K refused or unresolvable connections in a row (openai; default "
        "%(default)s); the server is also checked once (GET /models) before the first item",
    )
    p.add_argument(
        "--max-consecutive-failures",
        type=int,
        default=DEFAULT_MAX_CONSECUTIVE_FAILURES,
        metavar="N",
        help="stop after N failed items in a row (default %(default)s): a broken setup does not "
        "fill "
        "the store with failures",
    )
    p.add_argument(
        "--claim-lease",
        type=float,
        default=DEFAULT_CLAIM_LEASE_S,
        metavar="S",
        help="several describe runs may share one store: each claims an item before asking; "
        "a claim of a run that died expires after S seconds (default %(default)s)",
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
        default=_default("api_key_env"),
        metavar="VAR",
        help=f"environment variable holding the API key (default: {DEFAULT_KEY_ENV}, optional; "
        "a variable named here must be set)",
    )
    p.add_argument("--visual-prompt", default="none", choices=["none", "grid", "circle"])
    p.add_argument(
        "--boxes",
        type=Path,
        default=None,
        help="CSV img_id,x0,y0,x1,y1 of object boxes (circle; synth datasets have them)",
    )
    p.add_argument(
        "--device",
        default=_default("device"),
        help="auto, cpu, cuda, cuda:N (hf; default %(default)s)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        default=_default("trust_remote_code"),
        help="allow the checkpoint's own Python code (hf)",
    )
    p.add_argument("--skip-bad-rows", action="store_true", help="leave out faulty metadata rows")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_describe)


def teacher_config(args: argparse.Namespace) -> TeacherConfig:
    """The teacher's config of the parsed flags (a bad value is named by its flag)."""
    values = {key: getattr(args, key) for key in TeacherConfig.keys() if key not in FLAGS}
    values["spec"] = args.teacher
    values["request_options"] = parse_request_options(args.teacher_option)
    return TeacherConfig.from_mapping(values, name=flag)


def flag(key: str) -> str:
    """The flag of a TeacherConfig setting (``max_new_tokens`` -> ``--max-new-tokens``)."""
    return FLAGS.get(key, "--" + key.replace("_", "-"))


def describe_run(args: argparse.Namespace) -> DescribeRun:
    """The :class:`lga.teacher.DescribeRun` of the parsed flags."""
    from lga.teacher import build_describe_run

    return build_describe_run(
        args.data,
        teacher_config(args),
        args.store,
        split=args.split,
        dataset_config=args.dataset_config,
        prompts=args.prompts,
        only_prompts=args.only_prompts.split(",") if args.only_prompts else None,
        limit=args.limit,
        shard=args.shard,
        skip_bad_rows=args.skip_bad_rows,
        visual_prompt=args.visual_prompt,
        boxes=args.boxes,
        progress=not args.no_progress,
        max_consecutive_failures=args.max_consecutive_failures,
        claim_lease_s=args.claim_lease,
    )


def _describe(args: argparse.Namespace) -> int:
    from lga.teacher import DescribeStopped

    run = describe_run(args)
    where = f" shard {run.shard}" if run.shard else ""

    def announce(teacher) -> None:
        print(
            f"describe: {len(run.images)} image(s){where} x {len(run.prompts)} prompt(s) "
            f"({', '.join(p.name for p in run.prompts)}) with {teacher.id} -> {args.store}",
            file=sys.stderr,
        )

    try:
        summary = run.run(announce)
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
