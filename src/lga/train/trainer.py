"""The fine-tuning loop under Hugging Face Accelerate: CPU, one GPU, many GPUs, many nodes.

One optimizer step consumes one global batch of ``train.batch_size`` images: ``accum`` micro-steps,
each split across the processes (:class:`~lga.train.data.GlobalBatchSampler`). Per-image
embeddings are gathered with gradients (:func:`lga.train.losses.gather_with_grad`) so that every
process computes the loss of the whole micro-batch, and contrastive negatives span it.

Validation runs every ``eval.every`` steps (or each epoch) on the main process; the best state
by ``eval.select_by`` is written to ``RUN/model.partial/`` (``save_pretrained``) when it
improves, and becomes ``RUN/model/`` when the run finishes (``RunDir.publish_model``).
``accelerator.save_state`` checkpoints go to ``RUN/checkpoints/step_<n>/`` every
``train.checkpoint_every`` steps, with ``trainer_state.json`` (step, best score, best step); a
checkpoint directory appears only once complete (written under a temporary name, then renamed).
Only the main process writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lga.data.dataset import GroupDataset
from lga.evaluation.zero_shot import predict_zero_shot, predictions_table, zero_shot_probs
from lga.rundir import CHECKPOINT_STATE, RunDir
from lga.student.features import PixelDataset, Pixels, image_features
from lga.student.heads import (
    PROBE_FILE,
    LinearProbe,
    class_prototypes,
    fold_image_projection,
    image_place_basis,
    place_basis,
    project_out,
    prototype_head,
)
from lga.student.model import Student, class_text_features
from lga.train.config import FitConfig
from lga.train.data import CachedPixels, GlobalBatchSampler, TextTable
from lga.train.losses import gather_with_grad
from lga.train.methods import Embeddings, FineTuneMethod
from lga.train.model import DualEncoder, param_groups
from lga.train.tracking import tracker_values

log = logging.getLogger(__name__)

SELECT_KEYS = {
    "worst_group": "worst_group_accuracy",
    "accuracy": "accuracy",
    "weighted": "weighted_accuracy",
}


# ---------------------------------------------------------------------------------------------
# Small pieces


@dataclass
class WarmupSchedule:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine to 0 or constant."""

    total: int
    warmup: int
    schedule: str

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.schedule == "constant":
            return 1.0
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class TrainState:
    """What a checkpoint needs besides model, optimizer, scheduler and RNG states."""

    step: int = 0
    best_score: float | None = None
    best_step: int | None = None
    best_val: dict = field(default_factory=dict)
    last_eval_step: int | None = None

    def improves(self, score: float) -> bool:
        return self.best_score is None or score > self.best_score


def predict_split(
    student: Student,
    ds: GroupDataset,
    cfg: FitConfig,
    templates: list[str],
    head: LinearProbe | None = None,
):
    """(N, C) class probabilities of ``ds`` through the class prompts, or through ``head`` (lga's
    description prototypes); no feature cache: the weights change."""
    if head is not None:
        feats = image_features(
            student, ds, batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers,
            progress=False,
        )  # fmt: skip
        return head.probs(feats)
    return predict_zero_shot(
        student,
        ds,
        templates=templates,
        batch_size=cfg.eval.batch_size,
        num_workers=cfg.data.num_workers,
        cache=None,
        progress=False,
    )


def evaluate_split(
    student: Student,
    ds: GroupDataset,
    cfg: FitConfig,
    templates: list[str],
    head: LinearProbe | None = None,
):
    """Predictions table of ``ds`` through the class prompts or ``head`` (no feature cache)."""
    return predictions_table(ds, predict_split(student, ds, cfg, templates, head))


def make_adamw(groups: list[dict], **kwargs) -> torch.optim.AdamW:
    """AdamW as one fused kernel over all parameters where torch has it, else torch's default.

    Fused AdamW runs on CUDA and, since torch 2.4, on CPU. The default CPU implementation loops
    over the parameter tensors one op at a time: on a ViT-B/32-shaped CLIP it was ten times
    slower than fused and a third of a training step (``lga bench``, docs/performance.md).
    """
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError) as e:  # an older torch, an unsupported device
        log.info("fused AdamW unavailable (%s): using torch's default implementation", e)
        return torch.optim.AdamW(groups, **kwargs)


# ---------------------------------------------------------------------------------------------
# The loop


class FineTuner:
    """Fine-tunes a student with one :class:`FineTuneMethod` under an ``Accelerator``.

    Args:
        cfg: the run's configuration.
        accelerator: created by :func:`lga.train.accel.make_accelerator`.
        student: the loaded student (float32 weights, trainable parts already set).
        method: the objective.
        table: the texts of the sample.
        sample: the training sample; ``val``: the validation set.
        text_frozen: cache text embeddings once instead of running the text tower each step.
        score_val: predictions table -> (metrics, selection score), on the main process.
        out: the run directory.
        templates: the class-prompt templates.
        progress: show a progress bar.
    """

    def __init__(
        self,
        cfg: FitConfig,
        accelerator,
        student: Student,
        method: FineTuneMethod,
        table: TextTable,
        sample: GroupDataset,
        val: GroupDataset,
        *,
        text_frozen: bool,
        score_val: Callable,
        out: Path,
        templates: list[str],
        progress: bool = True,
        sample_weights: np.ndarray | None = None,
        prototype_rows: Tensor | None = None,
        places: Tensor | None = None,
    ):
        self.cfg, self.acc, self.student, self.method = cfg, accelerator, student, method
        self.table, self.sample, self.val, self.out = table, sample, val, out
        self.run = RunDir(out)
        self.score_val, self.templates, self.progress = score_val, templates, progress
        self.labels = torch.as_tensor(sample.y.copy(), dtype=torch.long)  # (N,)
        self.prototype_rows = prototype_rows  # (N,) bool: texts in the description prototypes
        self.places = places  # (N,) the place each image's background answer was read as
        self._warned_one_place = False  # lga.project_images found no class with two places
        tc = cfg.train
        self.sampler = GlobalBatchSampler(
            len(sample),
            global_batch=tc.batch_size,
            accum=tc.gradient_accumulation_steps,
            world=accelerator.num_processes,
            rank=accelerator.process_index,
            seed=tc.seed,
            weights=sample_weights,
        )
        self.total_steps = tc.max_steps or tc.epochs * self.sampler.steps_per_epoch
        self.eval_every = cfg.eval.every or self.sampler.steps_per_epoch
        model = DualEncoder(student.model, logit_scale_init=method.logit_scale_init)
        loss = tc.image_text_loss if tc.image_text_loss != "auto" else model.family.loss
        self.sigmoid = loss == "sigmoid"  # the image-text terms: SigLIP's loss or softmax ones
        log.info("image-text loss: %s (%s)", loss, model.family.name)
        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_adamw(
            param_groups(model, tc.weight_decay), lr=tc.lr, betas=tc.betas, eps=tc.eps
        )
        warmup = round(tc.warmup_ratio * self.total_steps)
        # Stepped by hand once per optimizer step: a prepared scheduler would step once per
        # process, which changes the schedule with the number of processes.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, WarmupSchedule(self.total_steps, warmup, tc.schedule)
        )
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(self.scheduler)
        self.text_cache = self._encode_all_texts() if text_frozen else None
        self.train_pixels = self.val_pixels = None
        if tc.cache_pixels:
            self.train_pixels = self._cache(sample)
            if accelerator.is_main_process:  # validation runs there only
                self.val_pixels = self._cache(val)
        else:
            self.loader = DataLoader(
                PixelDataset(sample, student.image_processor),
                batch_sampler=self.sampler,
                num_workers=cfg.data.num_workers,
                pin_memory=accelerator.device.type == "cuda",
                persistent_workers=cfg.data.num_workers > 0,
            )
        self.state = TrainState()
        self.log = self.run.train_log(accelerator.is_main_process)

    def _cache(self, ds: GroupDataset) -> CachedPixels:
        return CachedPixels.build(
            ds,
            self.student.image_processor,
            batch_size=self.cfg.eval.batch_size,
            num_workers=self.cfg.data.num_workers,
        )

    # -- embeddings ------------------------------------------------------------------------------

    @torch.no_grad()
    def _encode_all_texts(self) -> Tensor:
        """(T, D) embeddings of every text of the table, once (frozen text tower)."""
        model = self.acc.unwrap_model(self.model).model
        was_training = model.training
        model.eval()
        out = self._embed_texts(self.student, torch.arange(len(self.table.texts)))
        model.train(was_training)
        log.info("text tower frozen: %d text embeddings computed once", len(self.table.texts))
        return out.to(self.acc.device)  # (T, D)

    def _embed_texts(self, student: Student, index: Tensor) -> Tensor:
        """(M, D) normalised embeddings of the table's texts ``index``, 256 at a time."""
        out = []
        for i in range(0, len(index), 256):
            ids, mask = self.table.tokens(index[i : i + 256])
            out.append(student.text_features({"input_ids": ids, "attention_mask": mask}))
        return torch.cat(out)

    def _text_index(self, rows: Tensor) -> tuple[Tensor, list[int]]:
        """Indices into the table of this micro-batch's texts, and the size of each part."""
        parts = [self.table.per_image[name][rows] for name in self.method.image_texts]
        if self.method.needs_class_prompts:
            parts.append(self.table.class_index.flatten())
        if self.method.needs_spurious:
            parts.append(self.table.spurious_index)
        if not parts:
            return torch.empty(0, dtype=torch.long), []
        return torch.cat(parts), [len(p) for p in parts]

    def _forward(self, pixels: Pixels, index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Image embeddings (b, D), text embeddings of ``index`` (M, D), logit scale and bias."""
        dev = self.acc.device
        pixels = {k: v.to(dev) for k, v in pixels.items()}
        if self.text_cache is not None or len(index) == 0:
            u, _, scale, bias = self.model(pixels)
            v = self.text_cache[index.to(dev)] if len(index) else u.new_zeros(0, u.shape[1])
            return u, v, scale, bias
        uniq, inverse = torch.unique(index, return_inverse=True)  # encode each text once
        ids, mask = self.table.tokens(uniq)
        u, v, scale, bias = self.model(pixels, ids.to(dev), mask.to(dev))
        return u, v[inverse.to(dev)], scale, bias

    def embed(self, pixels: Pixels, rows: Tensor) -> Embeddings:
        """The method's embeddings of one micro-batch, per-image ones gathered over processes."""
        index, sizes = self._text_index(rows)
        u, v, scale, bias = self._forward(pixels, index)
        chunks = list(torch.split(v, sizes)) if sizes else []
        texts = {name: gather_with_grad(chunks.pop(0)) for name in self.method.image_texts}
        class_prompts = spurious = class_templates = None
        if self.method.needs_class_prompts:
            c, k = self.table.class_index.shape
            class_templates = chunks.pop(0).view(c, k, -1)  # (C, K, D)
            class_prompts = F.normalize(class_templates.mean(dim=1), dim=-1)  # (C, D)
        if self.method.needs_spurious:
            spurious = chunks.pop(0)  # (S, D)
        return Embeddings(
            gather_with_grad(u),
            self._batch_rows(self.labels, rows),
            texts,
            class_prompts,
            spurious,
            scale,
            logit_bias=bias,
            sigmoid=self.sigmoid,
            class_templates=class_templates,
            prototype_rows=self._batch_rows(self.prototype_rows, rows),
            places=self._batch_rows(self.places, rows),
        )

    def _batch_rows(self, per_image: Tensor | None, rows: Tensor) -> Tensor | None:
        """``(B,)`` the global batch's entries of an ``(N,)`` per-image tensor (gathered over
        processes), or None where the run has none."""
        if per_image is None:
            return None
        return self.acc.gather(per_image[rows].to(self.acc.device))

    # -- one step --------------------------------------------------------------------------------

    def micro_step(self, pixels: Pixels, rows: Tensor) -> dict[str, Tensor]:
        """Forward, backward and (every ``accum`` calls) an optimizer step; detached terms."""
        with self.acc.accumulate(self.model):
            e = self.embed(pixels, rows)
            terms = self.method.terms(e)
            loss = self.method.total(terms)
            self.acc.backward(loss)
            if self.acc.sync_gradients and self.cfg.train.grad_clip is not None:
                self.acc.clip_grad_norm_(self.params, self.cfg.train.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        out = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
        if self.method.logit_scale_init is not None:  # the method's own scale, as it learns
            out["logit_scale"] = torch.as_tensor(e.logit_scale).detach()
        return out

    def optimizer_step(self, batches) -> dict[str, float]:
        """``accum`` micro-steps from the iterator ``batches``, then the schedule; mean terms."""
        sums: dict[str, Tensor] = {}
        lr = self.scheduler.get_last_lr()[0]  # the rate this step uses
        accum = self.cfg.train.gradient_accumulation_steps
        for _ in range(accum):
            pixels, rows = next(batches)
            for k, v in self.micro_step(pixels, rows).items():
                sums[k] = sums.get(k, 0) + v / accum
        self.scheduler.step()
        self.state.step += 1
        return {"lr": lr, **{k: float(v) for k, v in sums.items()}}

    # -- evaluation and checkpoints --------------------------------------------------------------

    def _eval_student(self) -> Student:
        model = self.acc.unwrap_model(self.model).model
        return Student(model, self.student.processor, self.student.spec, "training")

    def _sample_texts(self, student: Student, names: Sequence[str]) -> Tensor:
        """(N, D) the mean over ``names`` of each sample image's text embeddings, as the model
        is now (normalised per text; on CPU)."""
        index = torch.stack([self.table.per_image[t] for t in names])  # (P, N)
        uniq, inverse = torch.unique(index, return_inverse=True)
        if self.text_cache is not None:
            emb = self.text_cache[uniq.to(self.text_cache.device)]
        else:
            emb = self._embed_texts(student, uniq)  # (U, D), normalised
        return emb.float().cpu()[inverse].mean(dim=0)

    def class_head(self, student: Student) -> LinearProbe | None:
        """The head the method predicts with, as the model is now (None: the class prompts).

        ``lga.head=descriptions``: each class's prototype over the whole sample's descriptions.
        ``lga.project=background``: those (or the class prompts) with the place directions of
        the whole sample's background answers removed; ``lga.project_images``: and with the
        places' direction in the whole sample's image embeddings folded in
        (:func:`~lga.student.heads.fold_image_projection`). The model's own scale and bias.
        """
        m = self.method
        if not m.has_head:
            return None
        classes = self.val.config.classes
        if m.head == "descriptions":
            per_image = self._sample_texts(student, m.head_texts)
            vectors = class_prototypes(per_image, self.labels, len(classes), self.prototype_rows)
        else:
            vectors = class_text_features(student, classes, self.templates).float().cpu()
        kind = "description prototypes" if m.head == "descriptions" else "class prompts"
        if m.project is not None:
            basis = place_basis(self._sample_texts(student, [m.project]), self.places)
            vectors = project_out(vectors, basis)
            if basis is not None:
                kind += ", the teacher's place directions projected out"
        if m.project_images:
            basis = image_place_basis(self._sample_images(student), self.labels, self.places)
            vectors = fold_image_projection(vectors, basis)
            if basis is not None:
                kind += "; the images' place direction projected out (folded into the head)"
            elif not self._warned_one_place:
                self._warned_one_place = True
                log.warning(
                    "lga.project_images: no class has sample images of two places (as the "
                    "background answers are read): no image direction to project out"
                )
        scale, bias = student.logit_scale().cpu(), student.logit_bias().cpu()
        return prototype_head(vectors, scale, bias, kind)

    def _embed_cached(self, student: Student, cached: CachedPixels) -> Tensor:
        """(N, D) normalised embeddings of cached images, in row order, eval batch by batch."""
        size = self.cfg.eval.batch_size
        return torch.cat([student.image_features(p).cpu() for p in cached.chunks(size)])

    def _sample_images(self, student: Student) -> Tensor:
        """(N, D) normalised embeddings of every sample image, as the model is now (on CPU)."""
        if self.train_pixels is not None:
            return self._embed_cached(student, self.train_pixels)
        return image_features(
            student, self.sample, batch_size=self.cfg.eval.batch_size,
            num_workers=self.cfg.data.num_workers, progress=False,
        ).cpu()  # fmt: skip

    def _val_predictions(self, student: Student, head: LinearProbe | None = None):
        if self.val_pixels is None:
            return evaluate_split(student, self.val, self.cfg, self.templates, head)
        feats = self._embed_cached(student, self.val_pixels)
        if head is not None:
            return predictions_table(self.val, head.probs(feats))
        classes = class_text_features(student, self.val.config.classes, self.templates).cpu()
        probs = zero_shot_probs(
            feats, classes, student.logit_scale().cpu(), student.logit_bias().cpu()
        )  # (N, C)
        return predictions_table(self.val, probs)

    def validate(self) -> None:
        """Validation on the main process; the best state so far goes to ``RUN/model.partial/``."""
        step = self.state.step
        if self.acc.is_main_process:
            student = self._eval_student()
            student.model.eval()
            with torch.no_grad():  # float32 master weights, no autocast
                head = self.class_head(student)
                preds = self._val_predictions(student, head)
            student.model.train()
            metrics, score = self.score_val(preds)
            best = self.state.improves(score)
            if best:
                self.state.best_score, self.state.best_step = score, step
                self.state.best_val = metrics
                classes = self.val.config.classes
                extra = None if head is None else (lambda d: head.save(d / PROBE_FILE, classes))
                self.run.save_model(student.model, student.processor, extra)  # staged until the end
            self.log.write(
                {
                    "step": step,
                    "epoch": step / self.sampler.steps_per_epoch,
                    "val": metrics,
                    "score": score,
                    "best": best,
                }
            )
            self._track(tracker_values(metrics, "val"), step)
            log.info(
                "step %d: validation %s = %.4f%s",
                step,
                self.cfg.eval.select_by,
                score,
                " (best)" if best else "",
            )
        self.state.last_eval_step = step
        self.acc.wait_for_everyone()

    def save_checkpoint(self) -> None:
        root = self.run.checkpoints
        final = root / f"step_{self.state.step:08d}"
        tmp = root / f".{final.name}.tmp"
        if self.acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp))
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            (tmp / CHECKPOINT_STATE).write_text(json.dumps(self.state.__dict__, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in sorted(root.glob("step_*"))[: -self.cfg.train.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()

    def resume(self) -> bool:
        """Load the newest complete checkpoint, if any; the log's later records are dropped."""
        ck = self.run.latest_checkpoint()
        if ck is None:
            log.warning("no checkpoint in %s: starting from the beginning", self.run.checkpoints)
            return False
        self.acc.load_state(str(ck))
        self.state = TrainState(**json.loads((ck / CHECKPOINT_STATE).read_text()))
        self.log.truncate_after(self.state.step)
        log.info("resumed from %s (step %d of %d)", ck, self.state.step, self.total_steps)
        return True

    def _track(self, values: dict, step: int) -> None:
        if self.cfg.tracking.report_to:
            self.acc.log(values, step=step)

    # -- the loop --------------------------------------------------------------------------------

    def _log_step(self, values: dict[str, float]) -> None:
        step = self.state.step
        if step % self.cfg.train.log_every and step != self.total_steps:
            return
        record = {"step": step, "epoch": step / self.sampler.steps_per_epoch, **values}
        self.log.write(record)
        self._track({f"train/{k}": v for k, v in record.items() if k != "step"}, step)

    def batches(self):
        """Micro-batches from the current step on, epoch after epoch (each seeded)."""
        spe = self.sampler.steps_per_epoch
        epoch, start = divmod(self.state.step, spe)
        while True:
            self.sampler.set_epoch(epoch, start)
            if self.train_pixels is not None:
                yield from self.train_pixels.batches(self.sampler)
            else:
                yield from self.loader
            epoch, start = epoch + 1, 0

    def train(self, *, resume: bool = False) -> bool:
        """Run to ``total_steps`` (or ``train.stop_after_steps`` more steps).

        Returns:
            True when training finished, False when stopped early by ``stop_after_steps``.
        """
        if not (resume and self.resume()) and self.cfg.eval.at_start:
            self.validate()
        self.model.train()
        tc = self.cfg.train
        stop_at = self.total_steps
        if tc.stop_after_steps is not None:
            stop_at = min(stop_at, self.state.step + tc.stop_after_steps)
        batches = self.batches()
        bar = tqdm(
            total=self.total_steps,
            initial=self.state.step,
            desc="fine-tuning",
            unit="step",
            disable=not (self.progress and self.acc.is_main_process),
        )
        while self.state.step < stop_at:
            values = self.optimizer_step(batches)
            self._log_step(values)
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.4f}")
            step = self.state.step
            if step % self.eval_every == 0 or step == self.total_steps:
                self.validate()
            periodic = tc.checkpoint_every and step % tc.checkpoint_every == 0
            stopping_early = step == stop_at < self.total_steps  # resumable whatever the period
            if periodic or stopping_early:
                self.save_checkpoint()
        bar.close()
        batches.close()
        return self.state.step >= self.total_steps
