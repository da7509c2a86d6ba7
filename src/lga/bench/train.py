"""The training figure: a whole ``lga`` optimizer step over the bare forward+backward."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lga.bench.common import figure, interleaved_samples, timed


def _fit_config(
    data_root: Path,
    store: Path,
    clip_dir: Path,
    *,
    batch: int,
    steps: int,
    nw: int,
    device: str,
    train: dict[str, Any] | None = None,
) -> Any:
    from lga.train.config import FitConfig

    return FitConfig.model_validate(
        {
            "method": "lga",
            "data": {"root": data_root, "num_workers": nw, "check_images": False},
            "student": {"spec": str(clip_dir), "device": device},
            "sample": {"n_train": None},
            "descriptions": {"store": store},
            "train": {
                "batch_size": batch,
                "max_steps": steps,
                "warmup_ratio": 0.0,
                **(train or {}),
            },
            "eval": {"at_start": False},
        }
    )


def train_pipeline_efficiency(
    data_root: str | Path,
    store_path: str | Path,
    clip_dir: str | Path,
    workdir: str | Path,
    *,
    batch_size: int = 32,
    steps: int = 3,
    num_workers: int = 2,
    device: str = "cpu",
    train: dict[str, Any] | None = None,
    count_flops: bool = False,
) -> dict[str, Any]:
    """Images/s of a full ``lga`` optimizer step over images/s of the bare forward+backward.

    The full step is :meth:`lga.train.trainer.FineTuner.optimizer_step` of the trainer that
    ``lga fit --method lga`` builds (:func:`lga.train.fit.build_fine_tuner`, default settings):
    the next batch of the trainer's own stream (pixels preprocessed once, ``train.cache_pixels``),
    the batch's description tokens from the text table, both towers, the lga loss (supcon +
    instance), backward, gradient clipping, AdamW and the schedule. The bare step runs the same
    model's two towers on one of those batches held ready (its pixels and distinct descriptions:
    the same shapes) and back-propagates the sum of the embeddings. They take turns, ``steps``
    times each after one warm-up step of each; best times are compared. ``optimizer_step_s``
    (AdamW alone) is reported for the breakdown.

    Args:
        train: ``train.*`` settings of the fit config (e.g. ``{"gradient_checkpointing": True}``).
        count_flops: also count the model FLOPs of the bare step (forward + backward, no
            recomputation) with ``torch.utils.flop_counter``: ``flops_per_step``.
    """
    from lga.train.fit import build_fine_tuner, load_run_data, run_accelerator

    workdir = Path(workdir)
    cfg = _fit_config(
        Path(data_root),
        Path(store_path),
        Path(clip_dir),
        batch=batch_size,
        steps=steps + 1,
        nw=num_workers,
        device=device,
        train=train,
    )
    out = workdir / "train-run"
    with run_accelerator(cfg, out) as acc:  # as lga fit runs it (TF32 on a GPU)
        device, precision = str(acc.device), acc.mixed_precision
        data = load_run_data(cfg, check_images=False, progress=False)
        tuner = build_fine_tuner(cfg, data, out, acc, progress=False)
        batches = tuner.batches()  # the trainer's own batch stream, epoch after epoch
        bare = _bare_step(tuner, *next(batches), acc)
        tuner.model.train()
        bare()  # warm-up: allocator, first-call costs, optimizer state
        tuner.optimizer_step(batches)
        opt_s = _optimizer_seconds(tuner)
        flops = _count_flops(bare) if count_flops else None
        samples = interleaved_samples(
            {"bare": bare, "full": lambda: tuner.optimizer_step(batches)}, steps
        )
        t = {k: min(v) for k, v in samples.items()}
        batches.close()
    model = tuner.student.model
    return figure(
        "train_pipeline_efficiency",
        t["bare"] / t["full"],
        unit="ratio",
        command=f"lga fit --method lga --batch-size {batch_size} --num-workers {num_workers} "
        f"(one optimizer step) vs bare forward+backward",
        sizes={
            "batch_size": batch_size,
            "timed_steps": steps,
            "num_workers": num_workers,
            "device": device,
            "mixed_precision": precision,
            "model": _clip_shape(model),
            "texts_per_step": int(bare.n_texts),
            "text_tokens": int(bare.n_tokens),
        },
        seconds={"bare": round(t["bare"], 3), "full": round(t["full"], 3)},
        images_per_s={
            "bare": round(batch_size / t["bare"], 2),
            "full": round(batch_size / t["full"], 2),
        },
        samples_s={k: [round(x, 3) for x in v] for k, v in samples.items()},
        median_ratio=round(float(np.median(samples["bare"]) / np.median(samples["full"])), 3),
        optimizer_step_s=round(opt_s, 3),
        optimizer={k: tuner.optimizer.defaults.get(k) for k in ("fused", "foreach")},
        train_settings=train or {},
        **({"flops_per_step": flops} if flops is not None else {}),
    )


def _count_flops(step: Callable[[], None]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


class _BareStep:
    """Forward of both towers on fixed tensors, backward of their sum; grads dropped."""

    def __init__(self, model: Any, pixels: Any, ids: Any, mask: Any, acc: Any):
        self.model, self.pixels, self.ids, self.mask, self.acc = model, pixels, ids, mask, acc
        self.n_texts, self.n_tokens = ids.shape

    def __call__(self) -> None:
        from lga.student.model import pooled

        with self.acc.autocast():
            u = pooled(self.model.get_image_features(**self.pixels))  # (B, D)
            v = pooled(self.model.get_text_features(input_ids=self.ids, attention_mask=self.mask))
            loss = u.float().sum() + v.float().sum()
        loss.backward()
        self.model.zero_grad(set_to_none=True)


def _bare_step(tuner: Any, pixels: Any, rows: Any, acc: Any) -> _BareStep:
    """The bare step on one real batch of the trainer: its pixels and its distinct texts."""
    import torch

    dev = acc.device
    index = torch.cat([tuner.table.per_image[name][rows] for name in tuner.method.image_texts])
    ids, mask = tuner.table.tokens(torch.unique(index))  # (T, L): what the full step encodes
    model = acc.unwrap_model(tuner.model).model
    pixels = {k: v.to(dev) for k, v in pixels.items()}  # pixel_values (and NaFlex's masks)
    return _BareStep(model, pixels, ids.to(dev), mask.to(dev), acc)


def _optimizer_seconds(tuner: Any) -> float:
    """Seconds of one AdamW step alone (gradients of ones), for the breakdown."""
    params = [p for g in tuner.optimizer.param_groups for p in g["params"]]
    for p in params:
        p.grad = p.new_zeros(p.shape)
    seconds = timed(tuner.optimizer.step)
    tuner.optimizer.zero_grad(set_to_none=True)
    return seconds


def _clip_shape(model: Any) -> dict[str, Any]:
    v, t = model.config.vision_config, model.config.text_config
    return {
        "vision": f"{v.num_hidden_layers}x{v.hidden_size}, patch {v.patch_size}, {v.image_size}px",
        "text": f"{t.num_hidden_layers}x{t.hidden_size}, vocab {t.vocab_size}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }
