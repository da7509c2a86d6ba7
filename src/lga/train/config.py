"""The configuration of ``lga fit``: one pydantic object per concern, layered like every lga config.

Layers (lowest first): these defaults, a run file (``--config``, e.g. the shipped
``configs/runs/waterbirds-vitb32.yaml``), the explicit command-line flags, then dotted overrides
(``train.lr=5e-6``). An unknown key or a value of the wrong type is a :class:`ConfigError` before
any work starts; the resolved object is written to ``RUN/config.yaml``.

The defaults are deliberately gentle. On a 95%-correlated sample the background is a strong
shortcut: a prototype measured every method at 0% worst-group accuracy after one epoch at
lr 1e-4 on a small CLIP. So: lr 1e-5 with warm-up and cosine decay, three epochs, gradient
clipping, weight decay, and the checkpoint chosen by validation worst-group accuracy among every
evaluation, the pre-trained model included (``eval.at_start``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveFloat, ValidationError, model_validator

from lga.config import (
    DataConfig,
    EvalRunConfig,
    Strict,
    StudentConfig,
    read_yaml,
    resolve_config_file,
    shipped_names,
)
from lga.errors import LgaError
from lga.teacher.prompts import BACKGROUND_DESCRIPTION, BACKGROUND_KEYWORDS, OBJECT_DESCRIPTION
from lga.train.method import Method

log = logging.getLogger(__name__)


class SampleConfig(Strict):
    """Which training images are used: the same sample for every method with the same seed."""

    n_train: int | None = Field(default=2000, gt=0)  # None: the whole training split
    seed: int = 0  # data seed: the sample (and the validation subsample) depend only on it
    val_n: int | None = Field(default=None, gt=0)  # subsample validation (None: all of it)
    # Batches balanced by the teacher's word on the background (any fine-tuning method; needs a
    # description store): each training image's place is read from its answer to
    # `balance_prompt` (the dataset config's nearest spurious prompt, by the pre-trained text
    # tower), and each epoch draws the sample with weight 1 / count(class, that place), so that
    # within a batch the background no longer tells the classes apart. No group label is read.
    balance: Literal["none", "background"] = "none"
    balance_prompt: str = BACKGROUND_DESCRIPTION


class DescriptionsConfig(Strict):
    """The teacher's descriptions (a store written by ``lga describe``)."""

    store: Path | None = None
    teacher: str | None = None  # choose a teacher id when the store holds several
    settings_hash: str | None = None  # choose generation settings when the store holds several


class TrainConfig(Strict):
    """Optimisation, parallelism and checkpoints of the fine-tuning methods."""

    epochs: int = Field(default=3, gt=0)
    max_steps: int | None = Field(default=None, gt=0)  # optimizer steps; overrides epochs
    batch_size: int = Field(default=64, gt=0)  # global: all processes x accumulation steps
    lr: float = Field(default=1e-5, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)  # on matrices only (ndim >= 2)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(default=1e-6, gt=0)
    schedule: Literal["cosine", "constant"] = "cosine"  # both after a linear warm-up
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    grad_clip: float | None = Field(default=1.0, gt=0)  # max global grad norm; None: off
    seed: int = 0  # model-side randomness and the per-epoch data order
    trainable: Literal["all", "last_k", "projections"] = "all"
    last_k: int = Field(default=2, gt=0)  # blocks per tower trained with trainable=last_k
    freeze_text: bool = False  # freeze the text tower: text embeddings computed once, cached
    train_logit_scale: bool = False  # the model's scale: CLIP's logit_scale, ALIGN's temperature
    # The image-text terms of erm and lga (class_ce, instance, prompt): softmax (CLIP's InfoNCE and
    # cross-entropy), SigLIP's pairwise sigmoid, or auto: the student family's own (sigmoid for
    # SigLIP and SigLIP 2, softmax for the others).
    image_text_loss: Literal["auto", "softmax", "sigmoid"] = "auto"
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU with it
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile (inductor) the model: faster GPU steps after compiling
    # Preprocess the sample and validation images once and keep them in memory (float32,
    # N x 3 x H x W: 1.2 GB for 2,000 images at 224 px) instead of decoding every epoch.
    cache_pixels: bool = True
    find_unused_parameters: bool = False  # DDP; only needed for unusual trainable sets
    log_every: int = Field(default=1, gt=0)  # steps between train_log.jsonl lines
    checkpoint_every: int | None = Field(default=None, gt=0)  # steps; None: no checkpoints
    keep_checkpoints: int = Field(default=2, gt=0)  # the newest ones are kept
    # End this invocation after so many steps with a checkpoint (time-boxed jobs; --resume).
    stop_after_steps: int | None = Field(default=None, gt=0)


class FitEvalConfig(Strict):
    """Validation (checkpoint selection) and test evaluation."""

    select_by: Literal["worst_group", "accuracy", "weighted"] = "worst_group"
    every: int | None = Field(default=None, gt=0)  # steps between evaluations; None: each epoch
    at_start: bool = True  # the pre-trained model is a candidate: fine-tuning never makes it worse
    batch_size: int = Field(default=64, gt=0)
    cache_dir: Path | None = None  # frozen-feature cache (zero-shot, linear probe)
    use_cache: bool = True


class LgaWeights(Strict):
    """Weights of the terms of the lga loss (0 switches a term off: it is not computed)."""

    supcon: float = Field(default=1.0, ge=0)
    instance: float = Field(default=1.0, ge=0)  # clip_loss(u_i, v_i): which image is which
    background: float = Field(default=0.0, ge=0)  # background_repulsion(u_i, w_i)
    class_ce: float = Field(default=0.0, ge=0)  # class_prompt_ce
    # class_prompt_ce of the *descriptions* (text only): the class prompts must classify the
    # teacher's object descriptions, so the class words are grounded in what the teacher says the
    # object looks like, with no image (and no background) involved.
    prompt: float = Field(default=0.0, ge=0)


class LgaConfig(Strict):
    """The language-guided contrastive method."""

    texts: list[str] = Field(default_factory=lambda: [OBJECT_DESCRIPTION], min_length=1)
    supcon: Literal["out", "in"] = "out"
    # Positives of the supervised contrast: every other anchor of the class (the slides'), or only
    # those of the other modality (an image's positives are its class's descriptions, and a
    # description's are its class's images): in a background-correlated sample, images of one
    # class mostly share their background, descriptions never mention it.
    positives: Literal["all", "cross"] = "all"
    temperature: float = Field(default=0.1, gt=0)
    background_prompt: str = BACKGROUND_DESCRIPTION
    background_margin: float = Field(default=0.0, ge=-1, le=1)
    # Object texts cleaned of the background before training: "background" drops each sentence
    # (keyword item) that holds a word of the image's own `background_keywords` answer, so a
    # teacher whose object answers describe the background too does not tie images to it.
    clean: Literal["none", "background"] = "none"
    background_keywords: str = BACKGROUND_KEYWORDS
    # The class text of lga's class term and of its predictions: the class prompts ("a photo of
    # a waterbird"), or `descriptions`: each class's prototype, the normalised mean embedding of
    # the (cleaned) object texts the teacher wrote for the sample's images of that class. Then
    # class_ce classifies each image against the prototypes of its batch's descriptions, and
    # validation and test against prototypes over the whole sample, saved with the model as its
    # head (model/linear_probe.safetensors), so `lga eval` scores the model as the run did.
    head: Literal["prompts", "descriptions"] = "prompts"
    # Object texts that contradict the image's label: with `label`, a text that the pre-trained
    # text tower's class prompts assign to another class than the image's (a teacher that named
    # a species of the other class) is replaced by the image's class prompt ("a photo of a
    # waterbird."), so no image is tied to the other class's words. Labels are what every
    # fine-tuning method reads anyway; the count goes to the log. `drop`: as `label`, and the
    # replaced texts are left out of the description prototypes (lga.head=descriptions), in
    # training and in the saved head, instead of pulling them towards the class prompt.
    filter: Literal["none", "label", "drop"] = "none"
    # The class texts (prompts or description prototypes) with the teacher's place directions
    # projected out: `background` reads each image's `background_prompt` answer as a place (the
    # dataset's spurious prompts nearest to it, as sample.balance=background does) and removes
    # from every class vector the span of the differences of the places' mean background-answer
    # embeddings (the batch's in training; the whole sample's for the saved head, which such a
    # run always writes). After Chuang et al. 2023 ("Debiasing vision-language models via biased
    # prompts"), with the teacher's own words for the places.
    project: Literal["none", "background"] = "none"
    # With lga.project=background: also remove the place direction the teacher's places give in
    # the IMAGE embeddings. Within each class, the mean image embedding of each place the
    # background answers were read as, minus the class's mean of them, averaged over the classes:
    # the span of those offsets' differences leaves every image embedding before the class head
    # (the batch's images in training, held fixed within the step; the whole sample's, folded
    # into the saved head). The text-side direction misses where the image tower puts the place.
    project_images: bool = False
    weights: LgaWeights = LgaWeights()

    @model_validator(mode="after")
    def _project_images_needs_the_places(self) -> LgaConfig:
        if self.project_images and self.project != "background":
            raise ValueError(
                "lga.project_images=true removes the direction between the places read from the "
                "teacher's background answers: it needs lga.project=background"
            )
        return self

    @model_validator(mode="after")
    def _drop_needs_the_description_head(self) -> LgaConfig:
        if self.filter == "drop" and self.head != "descriptions":
            raise ValueError(
                "lga.filter=drop leaves texts out of the description prototypes: it needs "
                "lga.head=descriptions (with the class prompts as head, use lga.filter=label)"
            )
        return self


class SpuriousAwareWeights(Strict):
    """Weights of the terms of the spurious-aware baseline (Yang et al. 2023); the reference's
    Waterbirds commands weigh them all 1 (``lga.train.spurious_aware``)."""

    clip: float = Field(default=1.0, ge=0)  # L_clip: image <-> its text (its class's prompts)
    inmodal: float = Field(default=1.0, ge=0)  # L_vc: image cosines, same class minus other
    prompt_inmodal: float = Field(default=1.0, ge=0)  # L_lc: the same over class-prompt embeddings
    separation: float = Field(default=1.0, ge=0)  # L_ls: mean |cos| class x spurious prompts


class SpuriousAwareConfig(Strict):
    """The spurious-aware contrastive fine-tuning of Yang et al. 2023, as its authors' code
    (YuYang0901/CLIP-spurious-finetune) runs it on Waterbirds; see ``lga.train.spurious_aware``."""

    # The CLIP term's text: `class_prompts` (the reference: each image's class, its template
    # ensemble), `caption`, or a prompt of the description store (one teacher text per image).
    text: str = "class_prompts"
    # Templates of the class and spurious prompts of the training terms: CLIP's 80 ImageNet ones
    # (the reference's), or the dataset config's. Predictions use student.templates as always.
    templates: Literal["imagenet80", "dataset"] = "imagenet80"
    # Spurious prompts: every template x place name (the reference's "land", "water"), the
    # dataset config's spurious_prompts, or the sample's most frequent background keywords.
    spurious_from: Literal["places", "dataset", "keywords"] = "places"
    keywords_prompt: str = BACKGROUND_KEYWORDS
    n_keywords: int = Field(default=8, gt=0)  # most frequent background keywords as prompts
    # The CLIP term's scale: the method's own, learned from 1 / init_temperature (the
    # reference's nn.Parameter from log(1/0.07)); null: the student's logit scale.
    init_temperature: float | None = Field(default=0.07, gt=0)
    # Group-balanced batches (each epoch draws the sample with weight 1 / count(group), with
    # replacement, as the reference's WILDS loader with uniform_over_groups): groups from the
    # teacher's background answers (`teacher`, as sample.balance=background: no group label is
    # read; needs a store), from the dataset's group labels (`groups`), or no balancing.
    balance: Literal["teacher", "groups", "none"] = "teacher"
    weights: SpuriousAwareWeights = SpuriousAwareWeights()


TRACKERS = ("tensorboard", "wandb", "mlflow")


class TrackingConfig(Strict):
    """Experiment trackers (``--report-to``), through Accelerate. Each run logs its settings,
    the training losses, every validation (overall, per class, per group, worst group) and the
    test metrics; frozen methods (zero-shot, linear probe, DFR) their validation and test.

    ``run_name`` defaults to the run folder's name; ``tags`` are added to the method, seed,
    dataset and student tags. TensorBoard writes to ``RUN/logs/<project>``."""

    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    project: str = "lga"  # wandb project, mlflow experiment, tensorboard subfolder
    run_name: str | None = None
    group: str | None = None  # wandb group / mlflow tag (reproduce: its folder's name)
    tags: list[str] = Field(default_factory=list)


# scikit-learn's C (inverse regularisation strength), the grid of DFR's reference code.
C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)


class LinearProbeConfig(Strict):
    """Logistic regression on frozen image features of the training sample, C chosen on
    validation. ``balance``: none, class (every class weighs the same) or group (every
    class x place group of the dataset's own labels weighs the same)."""

    c_grid: list[PositiveFloat] = Field(default_factory=lambda: list(C_GRID), min_length=1)
    penalty: Literal["l2", "l1"] = "l2"
    balance: Literal["none", "class", "group"] = "none"
    max_iter: int = Field(default=200, gt=0)  # L-BFGS (l2) or FISTA (l1) iterations


class DfrConfig(Strict):
    """Deep feature reweighting (Kirichenko et al. 2022) on frozen image features, as the
    authors' ``dfr_evaluate_spurious.py`` runs it: scikit-learn's liblinear logistic regression
    (its intercept penalised too) on group-balanced subsets of the validation split. C is chosen
    by ``select_by`` on a random half of it, fitted on a balanced subset of the other half; the
    final head averages ``subsets`` heads, each fitted on a balanced subset of the whole split
    standardised with the training embeddings' statistics (see ``lga.train.dfr``)."""

    c_grid: list[PositiveFloat] = Field(default_factory=lambda: list(C_GRID), min_length=1)
    penalty: Literal["l1", "l2"] = "l1"  # the reference's
    subsets: int = Field(default=20, gt=0)  # the reference's num_retrains
    max_iter: int = Field(default=100, gt=0)  # liblinear's; 100: scikit-learn's default


class FitConfig(Strict):
    """Everything ``lga fit`` needs; dumped as the run's ``config.yaml``.

    ``name`` names the run's column in tables (``metrics.json``'s ``name``): two recipes of one
    method (``lga`` and ``lga-slides``) are two names; None: the method's name."""

    method: Method
    name: str | None = None
    data: DataConfig
    student: StudentConfig = StudentConfig()
    sample: SampleConfig = SampleConfig()
    descriptions: DescriptionsConfig = DescriptionsConfig()
    train: TrainConfig = TrainConfig()
    eval: FitEvalConfig = FitEvalConfig()
    lga: LgaConfig = LgaConfig()
    spurious_aware: SpuriousAwareConfig = SpuriousAwareConfig()
    linear_probe: LinearProbeConfig = LinearProbeConfig()
    dfr: DfrConfig = DfrConfig()
    tracking: TrackingConfig = TrackingConfig()

    @property
    def run_name(self) -> str:
        """The column this run belongs to: ``name``, else the method."""
        return self.name or self.method.value

    @property
    def reads_teacher(self) -> bool:
        """Whether the result moves with the teacher's answers: lga and spurious-aware (which
        may read them), or batches balanced by them."""
        return self.method in (Method.LGA, Method.SPURIOUS_AWARE) or self.sample.balance != "none"

    @model_validator(mode="after")
    def _check(self) -> FitConfig:
        if self.sample.balance != "none" and self.descriptions.store is None:
            raise ValueError("sample.balance=background needs a description store (--descriptions)")
        if self.method is Method.LGA and self.descriptions.store is None:
            raise ValueError("method lga needs a description store (--descriptions STORE)")
        if self.method is Method.SPURIOUS_AWARE:
            self._check_spurious_aware()
        return self

    def _check_spurious_aware(self) -> None:
        sa, no_store = self.spurious_aware, self.descriptions.store is None
        if sa.spurious_from == "keywords" and no_store:
            raise ValueError("spurious_aware.spurious_from=keywords needs a description store")
        if sa.balance == "teacher" and no_store:
            raise ValueError(
                "spurious_aware.balance=teacher balances batches by the teacher's background "
                "answers: give a description store (--descriptions STORE), or set "
                "spurious_aware.balance=groups (the dataset's group labels) or none"
            )
        if self.sample.balance == "background" and sa.balance != "teacher":
            raise ValueError(
                f"sample.balance=background contradicts spurious_aware.balance={sa.balance}: "
                "the spurious-aware batches follow spurious_aware.balance"
            )


# Keys that control one invocation, not the result: they may differ between a run and its resume.
RUN_CONTROL_KEYS = (
    ("train", "stop_after_steps"),
    *(("tracking", k) for k in ("report_to", "project", "run_name", "group", "tags")),
)


def build_fit_config(
    *,
    method: Method | str | None = None,
    data: str | Path | None = None,
    student: str | None = None,
    descriptions: str | Path | None = None,
    seed: int | None = None,
    run_file: str | Path | None = None,
    defaults: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> FitConfig:
    """The one builder of a :class:`FitConfig`: ``lga fit``, ``lga.fit_config`` and
    ``lga reproduce`` all make theirs here, so equal inputs give equal configurations.

    Layers, lowest first: the model's defaults; ``defaults`` (what holds where no layer above
    sets it: reproduce's tracking group); the run file; ``settings`` (nested FitConfig keys: the
    CLI's other flags, reproduce's shared ``fit`` and the column's changes); the named
    arguments; the dotted ``overrides`` (``train.lr=5e-6``).

    Args:
        method: ``method`` (None: the run file's).
        data: ``data.root``.
        student: ``student.spec``.
        descriptions: ``descriptions.store``.
        seed: both ``sample.seed`` and ``train.seed``.
        run_file: a run config: a YAML path or a shipped name (``waterbirds-vitl14``).

    Raises:
        ConfigError: an unreadable run file, or an unknown key or a bad value, named.
    """
    from lga.config import deep_merge, read_yaml, resolve_config

    named: dict[str, Any] = {}
    for dotted, value in (
        ("method", method.value if isinstance(method, Method) else method),
        ("data.root", data),
        ("student.spec", student),
        ("descriptions.store", descriptions),
        ("sample.seed", seed),
        ("train.seed", seed),
    ):
        if value is not None:
            section, _, key = dotted.rpartition(".")
            value = str(value) if isinstance(value, Path) else value
            named = deep_merge(named, {section: {key: value}} if section else {key: value})
    base = dict(defaults or {})
    if run_file:
        base = deep_merge(base, read_yaml(resolve_run_file(str(run_file)), "run config"))
    base = deep_merge(deep_merge(base, dict(settings or {})), named)
    cfg = resolve_config(FitConfig, base=base, overrides=list(overrides))
    _warn_unread(cfg, overrides)
    return cfg


# The sections of FitConfig that one method alone reads.
METHOD_SECTIONS = {
    "lga": Method.LGA,
    "spurious_aware": Method.SPURIOUS_AWARE,
    "linear_probe": Method.LINEAR_PROBE,
    "dfr": Method.DFR,
}


def _warn_unread(cfg: FitConfig, overrides: Sequence[str]) -> None:
    """Log a warning for each ``KEY=VALUE`` override of a section that another method reads
    (``lga.project=background`` on an erm run): it is valid, and changes nothing."""
    for item in overrides:
        section = item.partition("=")[0].strip().split(".")[0]
        owner = METHOD_SECTIONS.get(section)
        if owner is not None and owner is not cfg.method:
            log.warning("%s: only --method %s reads the %s settings; this %s run ignores it",
                        item, owner.value, section, cfg.method.value)  # fmt: skip


def load_run_config(run: str | Path) -> FitConfig | EvalRunConfig | None:
    """A run folder's ``config.yaml`` read back typed: the FitConfig of an ``lga fit`` run, the
    EvalRunConfig of an ``lga eval`` run (the one with ``eval.split``); None when the folder
    has no config.yaml.

    Raises:
        LgaError: unreadable, not a mapping, or not a valid configuration; the message names
            the file and the key (``train.lr``).
    """
    from lga.rundir import RunDir

    path = RunDir(run).config_file
    if not path.is_file():
        return None
    raw = read_yaml(path, "run configuration")
    evaluated = raw.get("eval")
    model = EvalRunConfig if isinstance(evaluated, dict) and "split" in evaluated else FitConfig
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise LgaError(f"{path}: not a {model.__name__}: key {where!r}: {msg}{more}") from e


def shipped_run_configs() -> list[str]:
    return shipped_names("runs")


def resolve_run_file(name: str) -> Path:
    """A YAML path, or the name of a shipped run config."""
    return resolve_config_file(name, "runs", "run config")
