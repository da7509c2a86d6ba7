"""``fit``: one method on one sample, written as a run directory.

Every method goes through the same steps: the dataset is read, the training sample drawn
(``subsample(train, n_train, seed=sample.seed)``: the same images for every method), the method
run, the checkpoint chosen on validation, and the test split evaluated from the saved model.
What a run directory holds is :mod:`lga.rundir`'s contract.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from lga.data.dataset import GroupDataset, load_dataset, missing_classes, subsample
from lga.errors import ConfigError, DataError, LgaError
from lga.evaluation.zero_shot import (
    metrics_from_predictions,
    predict_zero_shot,
    predictions_table,
    score_unseen,
    templates_for,
    train_group_counts,
)
from lga.rundir import RunDir, output_dir
from lga.student.cache import FeatureCache
from lga.student.features import feature_cache, image_features
from lga.student.heads import PROBE_FILE, balance_weights, fit_linear_probe, read_head
from lga.student.model import Student, class_prompts, load_student, resolve_student_spec
from lga.train.config import RUN_CONTROL_KEYS, FitConfig, Method
from lga.train.data import (
    CAPTION,
    build_text_table,
    caption_texts,
    group_weights,
    keyword_prompts,
    read_descriptions,
    read_keywords,
    strip_background,
)
from lga.train.dfr import fit_dfr
from lga.train.methods import build_method
from lga.train.model import set_trainable
from lga.train.tracking import check_trackers, init_trackers, tracker_values
from lga.train.trainer import SELECT_KEYS, FineTuner, evaluate_split, predict_split

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What ``fit`` did.

    Attributes:
        run: the run directory.
        metrics: the test metrics written to ``metrics.json`` (``{}`` on the other processes
            of a multi-process run, and when the run stopped early).
        stopped_at_step: the step at which ``train.stop_after_steps`` ended this invocation
            (continue with ``resume=True``); None when the run finished.
    """

    run: RunDir
    metrics: dict
    stopped_at_step: int | None = None

    @property
    def finished(self) -> bool:
        return self.stopped_at_step is None


@dataclass
class RunData:
    """The dataset and the three sets a run uses."""

    full: GroupDataset
    sample: GroupDataset
    val: GroupDataset
    test: GroupDataset

    def score(self, preds, select_by: str) -> tuple[dict, float]:
        """Validation metrics of a predictions table and the selection score."""
        metrics = metrics_from_predictions(
            preds, self.val, train_group_counts=train_group_counts(self.full)
        )
        return metrics, float(metrics[SELECT_KEYS[select_by]])

    def score_on(self, ds: GroupDataset, preds, select_by: str) -> tuple[dict, float]:
        """Metrics and selection score of a predictions table of ``ds`` (a part of validation)."""
        metrics = metrics_from_predictions(
            preds, ds, train_group_counts=train_group_counts(self.full)
        )
        return metrics, float(metrics[SELECT_KEYS[select_by]])


# ---------------------------------------------------------------------------------------------
# Run directory and data


def config_changes(cfg: FitConfig, out: Path) -> list[str]:
    """What differs between ``cfg`` and the configuration saved in run folder ``out`` (the keys
    that control one invocation left out): ``["train.lr: 1e-05 -> 2e-05", ...]``."""
    saved = RunDir(out).config_file
    if not saved.is_file():
        return []
    return _config_diff(
        _comparable(yaml.safe_load(saved.read_text())), _comparable(cfg.model_dump(mode="json"))
    )


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _comparable(cfg_dict: dict) -> dict:
    d = yaml.safe_load(yaml.safe_dump(cfg_dict))
    for section, key in RUN_CONTROL_KEYS:
        d.get(section, {}).pop(key, None)
    return d


def prepare_run_dir(cfg: FitConfig, out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check ``out`` against the request and write ``config.yaml`` (main process only).

    A folder whose run never started (only ``config.yaml``: the previous attempt stopped
    before its first step, e.g. on a missing split) is reused as it is.

    Raises:
        LgaError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` is set,
            ``resume`` is asked with a configuration different from the run's, ``out`` holds
            names lga writes but no config.yaml of lga's, or ``out`` cannot be written.
    """
    rd = RunDir(out)
    rd.check_owned()  # never replace (or, with overwrite, remove) what lga did not write
    saved = rd.config_file
    if resume and saved.is_file():
        diff = _config_diff(
            _comparable(yaml.safe_load(saved.read_text())), _comparable(cfg.model_dump(mode="json"))
        )
        if diff:
            raise LgaError(
                f"--resume: the configuration differs from {saved}:\n  " + "\n  ".join(diff)
            )
    elif overwrite:
        rd.empty()
    elif saved.is_file() and rd.started:
        raise LgaError(
            f"{out} already holds a run; continue it with --resume, replace it "
            "with --overwrite, or choose another --out"
        )
    rd.write_config(cfg)


def load_run_data(cfg: FitConfig, *, check_images: bool, progress: bool) -> RunData:
    """Read the dataset; draw the training sample and the (optionally subsampled) validation set.

    Raises:
        DataError: a split the method needs has no rows, or the training split (or sample) lacks
            a class.
    """
    splits = ["val", "test"] if cfg.method is Method.ZERO_SHOT else ["train", "val", "test"]
    full = load_dataset(
        cfg.data.root,
        cfg.data.dataset_config,
        splits=splits,
        skip_bad_rows=cfg.data.skip_bad_rows,
        check_images=cfg.data.check_images and check_images,
        progress=progress,
        require={Method.ZERO_SHOT: ["test"], Method.DFR: ["val", "test"]}.get(cfg.method, splits),
    )
    sample = subsample(full.split("train"), cfg.sample.n_train, seed=cfg.sample.seed)
    val = subsample(full.split("val"), cfg.sample.val_n, seed=cfg.sample.seed)
    data = RunData(full, sample, val, full.split("test"))
    trains_on_sample = cfg.method not in (Method.ZERO_SHOT, Method.DFR)
    if trains_on_sample and (absent := missing_classes(sample)):
        raise DataError(
            f"the training sample of {len(sample)} image(s) (sample.n_train="
            f"{cfg.sample.n_train}) has no image of class(es) {absent}; draw a larger sample"
        )
    if cfg.sample.n_train and len(data.sample) < cfg.sample.n_train:
        log.warning(
            "the training split has %d images, fewer than n_train=%d: using them all",
            len(data.sample),
            cfg.sample.n_train,
        )
    log.info(
        "sample: %d training images %s; %d validation; %d test",
        len(sample),
        sample.group_counts(),
        len(val),
        len(data.test),
    )
    return data


def _final_metrics(cfg: FitConfig, data: RunData, preds, **extra) -> dict:
    return {
        "name": cfg.run_name,
        "method": cfg.method.value,
        "student": cfg.student.spec,
        "split": "test",
        **metrics_from_predictions(
            preds, data.test, train_group_counts=train_group_counts(data.full)
        ),
        "n_train": len(data.sample),
        "select_by": cfg.eval.select_by,
        **extra,
        "skipped_rows": len(data.full.skipped),
    }


def _write_results(out: Path, preds, metrics: dict) -> dict:
    rd = RunDir(out)
    rd.write_predictions(preds)
    rd.publish_model()  # the staged model becomes RUN/model just before metrics.json
    rd.write_metrics(metrics)
    log.info(
        "wrote %s/metrics.json: accuracy %.2f%%, worst group %.2f%% (%s)",
        out,
        100 * metrics["accuracy"],
        100 * metrics["worst_group_accuracy"],
        metrics["worst_group"],
    )
    return metrics


# ---------------------------------------------------------------------------------------------
# Frozen methods: zero-shot, linear probe, DFR


def _feature_cache(cfg: FitConfig, student: Student, full: GroupDataset) -> FeatureCache | None:
    return feature_cache(student, full, enabled=cfg.eval.use_cache, root=cfg.eval.cache_dir)


def _zero_shot(cfg: FitConfig, data: RunData, out: Path, progress: bool) -> dict:
    student = load_student(cfg.student)
    cache = _feature_cache(cfg, student, data.full)
    templates = templates_for(data.full, cfg.student.templates)
    kw = dict(
        templates=templates,
        batch_size=cfg.eval.batch_size,
        num_workers=cfg.data.num_workers,
        cache=cache,
        progress=progress,
    )
    extra = {"selected_step": 0}
    if len(data.val):
        val, score = data.score(
            predictions_table(data.val, predict_zero_shot(student, data.val, **kw)),
            cfg.eval.select_by,
        )
        # Nothing is chosen, so no train_log.jsonl (lga eval's shape, lga.rundir): the
        # validation metrics go into metrics.json.
        extra |= {"val_score": score, "val": val}
    preds = predictions_table(data.test, predict_zero_shot(student, data.test, **kw))
    extra |= score_unseen(data.full, out, lambda ds: predict_zero_shot(student, ds, **kw))
    # No model/: the run scored cfg.student.spec unchanged (RunDir.model_source).
    return _write_results(out, preds, _final_metrics(cfg, data, preds, **extra))


def _frozen_features(cfg: FitConfig, data: RunData, progress: bool):
    """The student and a function: dataset -> (N, D) normalised image features (cached)."""
    student = load_student(cfg.student)
    cache = _feature_cache(cfg, student, data.full)

    def feats(ds: GroupDataset) -> torch.Tensor:
        return image_features(
            student,
            ds,
            batch_size=cfg.eval.batch_size,
            num_workers=cfg.data.num_workers,
            cache=cache,
            progress=progress,
        )

    return student, feats


def _save_head(student: Student, head, data: RunData, out: Path) -> None:
    RunDir(out).save_model(
        student.model,
        student.processor,
        extra=lambda d: head.save(d / PROBE_FILE, data.full.config.classes),
    )


def _linear_probe(cfg: FitConfig, data: RunData, out: Path, progress: bool) -> dict:
    student, feats = _frozen_features(cfg, data, progress)
    train_x, val_x, test_x = feats(data.sample), feats(data.val), feats(data.test)
    lp = cfg.linear_probe
    keys = {"none": None, "class": data.sample.y, "group": data.sample.group}[lp.balance]
    probe, grid = fit_linear_probe(
        train_x,
        torch.as_tensor(data.sample.y.copy(), dtype=torch.long),
        val_x,
        lambda probs: data.score(predictions_table(data.val, probs), cfg.eval.select_by)[1],
        n_classes=len(data.full.config.classes),
        grid=lp.c_grid,
        penalty=lp.penalty,
        sample_weight=None if keys is None else balance_weights(keys),
        max_iter=lp.max_iter,
    )
    probe.info["method"] = Method.LINEAR_PROBE.value
    val_metrics, score = data.score(
        predictions_table(data.val, probe.probs(val_x)), cfg.eval.select_by
    )
    RunDir(out).train_log().write(
        {
            "step": 0,
            "epoch": 0.0,
            "val": val_metrics,
            "score": score,
            "best": True,
            "C": probe.C,
            "grid": grid,
        }
    )
    _save_head(student, probe, data, out)
    preds = predictions_table(data.test, probe.probs(test_x))
    unseen = score_unseen(data.full, out, lambda ds: probe.probs(feats(ds)))
    return _write_results(
        out,
        preds,
        _final_metrics(cfg, data, preds, selected_step=0, val_score=score, C=probe.C, **unseen),
    )


def _dfr(cfg: FitConfig, data: RunData, out: Path, progress: bool) -> dict:
    student, feats = _frozen_features(cfg, data, progress)
    val_x, test_x = feats(data.val), feats(data.test)
    result = fit_dfr(
        val_x,
        data.val,
        lambda ds, probs: data.score_on(ds, predictions_table(ds, probs), cfg.eval.select_by),
        cfg.dfr,
        seed=cfg.train.seed,
        x_train=feats(data.sample) if len(data.sample) else None,  # the final scaler's
    )
    RunDir(out).train_log().write(
        {
            "step": 0,
            "epoch": 0.0,
            "val": result.held_out_metrics,  # the chosen C's head, on the half it was not fitted on
            "score": result.score,
            "best": True,
            "C": result.head.C,
            "grid": result.grid,
            "n_tune_fit": result.n_tune_fit,
            "n_tune_held_out": result.n_tune_held_out,
            "n_fit": result.n_fit,
            "scaler": result.scaler,
        }
    )
    _save_head(student, result.head, data, out)
    preds = predictions_table(data.test, result.head.probs(test_x))
    unseen = score_unseen(data.full, out, lambda ds: result.head.probs(feats(ds)))
    return _write_results(
        out,
        preds,
        _final_metrics(
            cfg,
            data,
            preds,
            selected_step=0,
            val_score=result.score,
            C=result.head.C,
            n_fit=result.n_fit,
            subsets=cfg.dfr.subsets,
            **unseen,
        ),
    )


# ---------------------------------------------------------------------------------------------
# Fine-tuning


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def make_accelerator(cfg: FitConfig, out: Path):
    """The run's ``Accelerator``: precision, accumulation, trackers, project directory, and
    ``torch.compile`` of the model in ``prepare`` with ``train.compile``."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration

    tc = cfg.train
    if torch.cuda.is_available():
        # TF32 tensor cores for the float32 matmuls that bf16 autocast leaves (or all of them
        # under mixed_precision=no): about 8x the float32 rate on A100/H100, 10-bit mantissa.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Accelerator(
        mixed_precision=_mixed_precision(tc.mixed_precision),
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        cpu=cfg.student.device == "cpu",
        log_with=list(cfg.tracking.report_to) or None,
        project_config=ProjectConfiguration(
            project_dir=str(out), logging_dir=str(RunDir(out).logs)
        ),
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=tc.find_unused_parameters)
        ],
        step_scheduler_with_optimizer=False,
        dynamo_backend="inductor" if tc.compile else None,  # None: accelerate config / env
    )


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


def _text_sources(cfg: FitConfig, data: RunData, names: list[str]) -> dict[str, dict[int, str]]:
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
    return {
        n: caption_texts(data.sample, template) if n == CAPTION else descriptions[n] for n in names
    }


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
    table = build_text_table(
        student.tokenize,
        data.sample,
        per_image=_text_sources(cfg, data, method.image_texts),
        class_prompts=class_prompts(data.full.config.classes, train_templates),
        spurious=_spurious_prompts(cfg, data, train_templates) if method.needs_spurious else [],
        max_length=student.max_text_length,
        fixed_length=student.family.padding == "max_length",
    )
    if cfg.tracking.report_to:
        init_trackers(acc, cfg, out, _flat(cfg.model_dump(mode="json")))
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
        sample_weights=_balance_weights(cfg, data, student, out),
    )


def batch_balance(cfg: FitConfig) -> str:
    """How the fine-tuning batches are balanced: ``none``, ``background`` (groups read from the
    teacher's background answers) or ``groups`` (the dataset's group labels)."""
    if cfg.method is Method.SPURIOUS_AWARE:
        return {"teacher": "background", "groups": "groups", "none": "none"}[
            cfg.spurious_aware.balance
        ]
    return cfg.sample.balance


def _balance_weights(cfg: FitConfig, data: RunData, student, out: Path) -> np.ndarray | None:
    """Per-image sampling weights of the balanced batches (``batch_balance``), or None.

    What they were read from and the group counts go to the log and ``RUN/balance.json``.
    """
    mode = batch_balance(cfg)
    if mode == "none":
        return None
    if mode == "background":
        weights, summary = _teacher_groups(cfg, data, student)
    else:
        spec = data.full.config
        counts = np.bincount(data.sample.group, minlength=spec.n_groups)
        weights = group_weights(data.sample.group)
        summary = {"group_counts": dict(zip(spec.group_names(), counts.tolist(), strict=True))}
    summary = {"source": "teacher" if mode == "background" else "groups", **summary}
    log.info("balanced batches: %s", summary)
    if out is not None:
        RunDir(out).write_balance(summary)
    return weights


@torch.no_grad()
def _teacher_groups(cfg: FitConfig, data: RunData, student) -> tuple[np.ndarray, dict]:
    """Sampling weights 1 / count(class, place read from the teacher's background description).

    Each background description is given the place whose spurious prompts (the dataset config's,
    template-averaged) its pre-trained text embedding is nearest to. The inferred group counts
    and how often the inferred place agrees with the dataset's own column (for information: it
    is not used) are returned with the weights.
    """
    prompt = cfg.sample.balance_prompt
    texts = read_descriptions(cfg.descriptions, data.full, data.sample, [prompt])[prompt]
    ids = data.sample.img_ids.tolist()
    spurious = data.full.config.spurious_texts()  # place name -> prompts
    place_feats = torch.stack(
        [student.encode_texts(spurious[p]).mean(dim=0) for p in data.full.config.places]
    )  # (P, D)
    desc = student.encode_texts([texts[i] for i in ids])  # (N, D)
    inferred = (desc @ F.normalize(place_feats, dim=-1).T).argmax(dim=1).numpy()  # (N,)
    spec = data.full.config
    groups = spec.group_id(data.sample.y, inferred)
    counts = np.bincount(groups, minlength=spec.n_groups)
    agree = float((inferred == data.sample.place).mean())
    summary = {
        "prompt": prompt,
        "inferred_group_counts": dict(zip(spec.group_names(), counts.tolist(), strict=True)),
        "agreement_with_place_column": round(agree, 4),
    }
    return 1.0 / counts[groups], summary


def _fine_tune(
    cfg: FitConfig, data: RunData, out: Path, acc, *, resume: bool, progress: bool
) -> FitResult:
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
    head = read_head(best.spec)[0] if tuner.method.head == "descriptions" else None
    preds = evaluate_split(best, data.test, cfg, templates, head)
    unseen = score_unseen(data.full, out, lambda ds: predict_split(best, ds, cfg, templates, head))
    metrics = _write_results(
        out,
        preds,
        _final_metrics(
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


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested config -> flat ``{"a.b": scalar}`` for trackers (lists as strings)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


# ---------------------------------------------------------------------------------------------
# Entry point


def fit(
    cfg: FitConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> FitResult:
    """Run one method and write the run directory ``out``.

    Under ``accelerate launch`` every process calls this; only the main process writes files
    and gets the metrics (the others get ``{}``). The frozen methods run on the main process
    alone.

    Args:
        cfg: the resolved configuration.
        out: the run directory.
        resume: continue from the newest checkpoint in ``out/checkpoints`` (fine-tuning).
        overwrite: replace the results of a previous run in ``out``.
        progress: progress bars.

    Returns:
        The run directory, the test metrics written to its ``metrics.json``, and the step at
        which ``train.stop_after_steps`` ended the run early (then no metrics), if it did.

    Raises:
        LgaError: a bad run directory, dataset, configuration or description store.
    """
    out = Path(out)
    resolve_student_spec(cfg.student.spec)  # a missing folder fails here, before any output
    RunDir(out).check_owned()  # and a folder holding the user's model/ or metrics.json
    check_trackers(cfg.tracking.report_to)  # a tracker that cannot start stops the run here
    # A bad --out fails here too; a run that fails before producing anything leaves no folder,
    # and a run that fails later leaves no model/ (its model is staged until metrics.json).
    with output_dir(out, what="run folder"):
        try:
            return _fit(cfg, out, resume=resume, overwrite=overwrite, progress=progress)
        except BaseException:
            RunDir(out).discard_unfinished_model()
            raise


def _fit(cfg: FitConfig, out: Path, *, resume: bool, overwrite: bool, progress: bool) -> FitResult:
    if not cfg.method.fine_tunes:
        from accelerate import PartialState

        state = PartialState()
        if not state.is_main_process:
            return FitResult(RunDir(out), {})
        if state.num_processes == 1:
            PartialState._reset_state()
        data = load_run_data(cfg, check_images=True, progress=progress)  # before the run dir
        prepare_run_dir(cfg, out, resume=resume, overwrite=overwrite)
        run = {Method.ZERO_SHOT: _zero_shot, Method.LINEAR_PROBE: _linear_probe, Method.DFR: _dfr}
        metrics = run[cfg.method](cfg, data, out, progress)
        if cfg.tracking.report_to:
            _track_frozen(cfg, out, metrics)
        return FitResult(RunDir(out), metrics)
    acc = make_accelerator(cfg, out)
    try:
        # One process decodes every image to validate the dataset; the others read the metadata.
        # A dataset the method cannot use is refused before the run directory is made.
        data = load_run_data(cfg, check_images=acc.is_main_process, progress=progress)
        if acc.is_main_process:
            prepare_run_dir(cfg, out, resume=resume, overwrite=overwrite)
        acc.wait_for_everyone()
        return _fine_tune(cfg, data, out, acc, resume=resume, progress=progress)
    finally:
        release_accelerator(acc)


def _track_frozen(cfg: FitConfig, out: Path, metrics: dict) -> None:
    """A frozen method's validation (from its train log) and test metrics, to the trackers."""
    acc = make_accelerator(cfg, out)
    try:
        init_trackers(acc, cfg, out, _flat(cfg.model_dump(mode="json")))
        records = RunDir(out).read_train_log()
        val = metrics.get("val") or next((r["val"] for r in reversed(records) if "val" in r), None)
        if val is not None:
            acc.log(tracker_values(val, "val"), step=0)
        acc.log(tracker_values(metrics, "test"), step=0)
    finally:
        release_accelerator(acc)


def release_accelerator(acc) -> None:
    """End trackers; in a single process, forget Accelerate's global state so that another
    ``fit`` in the same Python process (a sweep, a notebook) may use other precision settings."""
    from accelerate.state import AcceleratorState, GradientState

    acc.end_training()
    if acc.num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
