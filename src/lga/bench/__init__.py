"""Performance benchmarks: each stage of the pipeline measured as a ratio, side by side, in one run.

Absolute speeds on a shared machine say little, so every figure compares two ways of doing the
same work in one process, interleaved round by round (best time of ``repeats`` rounds each):

- ``teacher_batch_speedup`` (:mod:`lga.bench.teacher`): items/s of the ``hf:`` teacher (the real
  transformers backend, a tiny random LLaVA) at batch size B over batch size 1, every answer
  exactly ``max_new_tokens``.
- ``teacher_concurrency_speedup`` (:mod:`lga.bench.teacher`): items/s of the ``openai:`` teacher
  at concurrency C over 1, against the loopback chat-completions server with a fixed latency;
  with the requests sent per connection opened (``connections``: keep-alive reuse).
- ``train_pipeline_efficiency`` (:mod:`lga.bench.train`): images/s of a whole ``lga`` optimizer
  step through the real trainer (its batches, description tokens, text tower, loss, clipping,
  AdamW) over images/s of the bare model forward+backward on the same batch shapes, for a
  ViT-B/32-shaped random CLIP.
- ``eval_cache_speedup`` (:mod:`lga.bench.eval_cache`): a second ``lga eval`` of the same frozen
  model and data over the first.
- ``store_writes_per_s`` (:mod:`lga.bench.store`): description rows committed per second
  through the store.

Each function returns one *figure* (:func:`lga.bench.common.figure`): ``{"value", "goal",
"passed", "unit", "command", "sizes", ...timings}``; :func:`lga.bench.run.run_benchmarks` runs
them all on assets it builds offline (:mod:`lga.offline.bench_data`, :mod:`lga.offline.clip`,
:mod:`lga.offline.tiny_llava`) and adds the ``machine``. The plan (sizes), goals and timing
helpers are in :mod:`lga.bench.common`.
"""

from lga.bench.common import FIGURES, FULL, GOALS, QUICK, BenchPlan
from lga.bench.run import format_table, run_benchmarks

__all__ = ["FIGURES", "FULL", "GOALS", "QUICK", "BenchPlan", "format_table", "run_benchmarks"]
