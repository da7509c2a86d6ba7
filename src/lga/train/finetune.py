"""The fine-tuning methods (erm, spurious-aware, lga): the trainer built from a FitConfig,
trained, and the selected checkpoint evaluated on test."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lga.errors import ConfigError
from lga.evaluation.zero_shot import score_unseen, templates_for
from lga.rundir import RunDir
from lga.student.heads import read_head
from lga.student.model import Student, class_prompts, class_text_features, load_student
from lga.train.balance import batch_weights, teacher_places
from lga.train.config import FitConfig, Method
from lga.train.data import (
    CAPTION,
    build_text_table,
    caption_texts,
    keyword_prompts,
    read_descriptions,
    read_keywords,
    strip_background,
)
from lga.train.methods import build_method
from lga.train.model import set_trainable
from lga.train.rundata import RunData
from lga.train.runfolder import FitResult, final_metrics, write_results
from lga.train.tracking import flat_config, init_trackers, tracker_values
from lga.train.trainer import FineTuner, evaluate_split, predict_split

log = logging.getLogger(__name__)


def _training_student(cfg: FitConfig, *, needs_text: bool) -> tuple[Student, bool]:
    """The student with float32 master weights on CPU (``prepare`` moves it); text frozen?

    A method that embeds no text at all gets a frozen text tower: parameters that receive no
    gradient would stall DDP and waste optimizer memory.
    """
    if cfg.student.dtype not in ("auto", "float32"):
        raise ConfigError(
            f"fine-tuning keeps float32 weights; student.dtype={cfg.student.dtype} "
            "is for evaluation. Use train.mixed_precision=bf16 (or fp16) instead"
        )
    student = load_student(cfg.student.model_copy(update={"dtype": "float32", "device": "cpu"}))
    tc = cfg.train
    trainable = set_trainable(
        student.model,
        trainable=tc.trainable,
        last_k=tc.last_k,
        freeze_text=tc.freeze_text or not needs_text,
        train_logit_scale=tc.train_logit_scale,
    )
    if tc.gradient_checkpointing:
        student.model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    return student, trainable.text_frozen


def _spurious_prompts(cfg: FitConfig, data: RunData, templates: list[str]) -> list[str]:
    sa = cfg.spurious_aware
    if sa.spurious_from == "places":  # the reference's: every template x spurious value
        return [t.format(place) for place in data.full.config.places for t in templates]
    if sa.spurious_from == "dataset":
        return [p for prompts in data.full.config.spurious_texts().values() for p in prompts]
    keywords = read_keywords(cfg.descriptions, data.full, data.sample, sa.keywords_prompt)
    return keyword_prompts(keywords, sa.n_keywords)


def _text_sources(
    cfg: FitConfig, data: RunData, names: list[str], student: Student
) -> tuple[dict[str, dict[int, str]], set[int]]:
    """The per-image texts of ``names`` (cleaned and filtered as ``cfg.lga`` says), and the ids
    of the images whose object text the label filter replaced."""
    descriptions = read_descriptions(cfg.descriptions, data.full, data.sample, names)
    if cfg.method is Method.LGA and cfg.lga.clean == "background":
        keywords = read_keywords(cfg.descriptions, data.full, data.sample,
                                 cfg.lga.background_keywords)  # fmt: skip
        changed = 0
        for n in [n for n in cfg.lga.texts if n in descriptions]:
            raw = descriptions[n]
            descriptions[n] = {i: strip_background(t, keywords.get(i, [])) for i, t in raw.items()}
            changed += sum(descriptions[n][i] != t for i, t in raw.items())
        log.info("lga.clean=background: %d object text(s) lost a part about the background",
                 changed)  # fmt: skip
    template = templates_for(data.full, "single")[0]
    replaced: set[int] = set()
    if cfg.method is Method.LGA and cfg.lga.filter in ("label", "drop"):
        for n in [n for n in cfg.lga.texts if n in descriptions]:
            descriptions[n], caught = _label_filter(descriptions[n], data, student, template)
            replaced |= caught
    texts = {
        n: caption_texts(data.sample, template) if n == CAPTION else descriptions[n] for n in names
    }
    return texts, replaced


@torch.no_grad()
def _label_filter(
    texts: dict[int, str], data: RunData, student: Student, template: str
) -> tuple[dict[int, str], set[int]]:
    """``texts`` with each text that the class prompts (the pre-trained text tower's, the
    dataset's templates) assign to another class than its image's replaced by the image's class
    prompt (``lga.filter=label``), and the ids of the images whose text was replaced."""
    spec = data.full.config
    ids, y = data.sample.img_ids.tolist(), data.sample.y
    was_training = student.model.training
    student.model.eval()
    classes = class_text_features(student, spec.classes, spec.class_templates).cpu()  # (C, D)
    unique = list(dict.fromkeys(texts[i] for i in ids))  # each text encoded once
    verdict = (student.encode_texts(unique) @ classes.T).argmax(dim=1).tolist()
    class_of = dict(zip(unique, verdict, strict=True))
    said = np.array([class_of[texts[i]] for i in ids])
    student.model.train(was_training)
    out = {i: texts[i] if said[k] == y[k] else template.format(spec.classes[y[k]])
           for k, i in enumerate(ids)}  # fmt: skip
    replaced = {i for k, i in enumerate(ids) if said[k] != y[k]}
    log.info("lga.filter=label: %d of %d object texts name another class than their image's: "
             "replaced by the class prompt", len(replaced), len(ids))  # fmt: skip
    return out, replaced


def build_fine_tuner(cfg: FitConfig, data: RunData, out: Path, acc, *, progress: bool) -> FineTuner:
    """The trainer of a fine-tuning method, ready to step: seeded, student loaded, texts tokenised.

    ``lga fit`` trains it; ``lga bench`` times its :meth:`FineTuner.optimizer_step`.
    """
    from accelerate.utils import set_seed

    set_seed(cfg.train.seed)
    method = build_method(cfg)
    needs_text = bool(method.image_texts) or method.needs_class_prompts or method.needs_spurious
    student, text_frozen = _training_student(cfg, needs_text=needs_text)
    templates = templates_for(data.full, cfg.student.templates)  # predictions
    train_templates = method.prompt_templates or templates  # the class prompts of the losses
    per_image, replaced = _text_sources(cfg, data, method.image_texts, student)
    table = build_text_table(
        student.tokenize,
        data.sample,
        per_image=per_image,
        class_prompts=class_prompts(data.full.config.classes, train_templates),
        spurious=_spurious_prompts(cfg, data, train_templates) if method.needs_spurious else [],
        max_length=student.max_text_length,
        fixed_length=student.family.padding == "max_length",
    )
    if cfg.tracking.report_to:
        init_trackers(acc, cfg, out, flat_config(cfg))
    places = _places(cfg, data, method, student)  # read once: balancing may read the same answers
    read = None if places is None else (method.project, places.numpy())
    return FineTuner(
        cfg,
        acc,
        student,
        method,
        table,
        data.sample,
        data.val,
        text_frozen=text_frozen,
        out=out,
        templates=templates,
        progress=progress,
        score_val=lambda preds: data.score(preds, cfg.eval.select_by),
        sample_weights=batch_weights(cfg, data, student, out, read),
        prototype_rows=_prototype_rows(cfg, data, replaced),
        places=places,
    )


def _prototype_rows(cfg: FitConfig, data: RunData, replaced: set[int]) -> torch.Tensor | None:
    """(N,) bool: the sample's images whose texts make the description prototypes (all but the
    replaced ones with ``lga.filter=drop``), or None: all of them."""
    if cfg.method is not Method.LGA or cfg.lga.filter != "drop":
        return None
    return torch.tensor([i not in replaced for i in data.sample.img_ids.tolist()])


def _places(cfg: FitConfig, data: RunData, method, student: Student) -> torch.Tensor | None:
    """(N,) the place each sample image's background answer is read as (lga.project), or None."""
    if method.project is None:
        return None
    places = teacher_places(cfg, data, student, method.project)
    counts = np.bincount(places, minlength=len(data.full.config.places)).tolist()
    log.info("lga.project=background: places read from %r: %s", method.project, counts)
    if sum(c > 0 for c in counts) < 2:
        log.warning("lga.project=background: every %r answer was read as one place (%s): there is "
                    "no direction between places to project out", method.project,
                    dict(zip(data.full.config.places, counts, strict=True)))  # fmt: skip
    return torch.as_tensor(places, dtype=torch.long)


def fine_tune(
    cfg: FitConfig, data: RunData, out: Path, acc, *, resume: bool, progress: bool
) -> FitResult:
    """Train, then evaluate the checkpoint chosen on validation on test (main process)."""
    tuner = build_fine_tuner(cfg, data, out, acc, progress=progress)
    templates = tuner.templates
    finished = tuner.train(resume=resume)
    acc.wait_for_everyone()
    if not finished:
        log.warning(
            "stopped after step %d of %d (train.stop_after_steps); continue with --resume",
            tuner.state.step,
            tuner.total_steps,
        )
        return FitResult(RunDir(out), {}, stopped_at_step=tuner.state.step)
    if not acc.is_main_process:
        return FitResult(RunDir(out), {})
    best = load_student(cfg.student.model_copy(update={"spec": str(RunDir(out).current_model())}))
    head = read_head(best.spec)[0] if tuner.method.has_head else None
    preds = evaluate_split(best, data.test, cfg, templates, head)
    unseen = score_unseen(data.full, out, lambda ds: predict_split(best, ds, cfg, templates, head))
    metrics = write_results(
        out,
        preds,
        final_metrics(
            cfg,
            data,
            preds,
            selected_step=tuner.state.best_step,
            val_score=tuner.state.best_score,
            steps=tuner.total_steps,
            processes=acc.num_processes,
            **unseen,
        ),
    )
    if cfg.tracking.report_to:
        acc.log(tracker_values(metrics, "test"), step=tuner.total_steps)
    return FitResult(RunDir(out), metrics)
