"""Where a CLIP ViT student looks: attention rollout and Grad-CAM maps, students side by side.

- Attention rollout (Abnar & Zuidema 2020): per layer, the head-averaged attention mixed with the
  identity for the residual stream, ``0.5 A + 0.5 I`` (rows renormalised), multiplied through the
  layers; the class token's row over the patch tokens says how much each patch flows into the
  image embedding. It does not depend on the class prompt.
- Grad-CAM on the patch tokens entering the last block, for the predicted class prompt's logit
  ``scale * cos(image, class prompt)``: channel weights = gradients averaged over patches,
  map = ReLU(Σ_d w_d a_{t,d}). (The last block's own patch outputs do not reach the pooled class
  token, so their gradient is zero: the block's input is the last place the map can be read.)

Both need the attention weights, which only the eager attention implementation returns: the
student is switched to it for the computation and switched back afterwards.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lga.errors import LgaError
from lga.outputs import make_output_dir
from lga.student.heads import saved_head
from lga.student.model import Student, class_text_features

log = logging.getLogger(__name__)


@dataclass
class Saliency:
    """One student's view of one image.

    Attributes:
        label: the student's name in figures (``"pre-trained"``, ``"lga"``, ...).
        image: (H, W, 3) the image as the student sees it (resized, cropped), in [0, 1].
        probs: (C,) class probabilities.
        rollout: (h, w) attention rollout over the patch grid, scaled to [0, 1].
        gradient: (h, w) Grad-CAM for the predicted class prompt, scaled to [0, 1].
    """

    label: str
    image: np.ndarray
    probs: np.ndarray
    rollout: np.ndarray
    gradient: np.ndarray

    @property
    def pred(self) -> int:
        return int(self.probs.argmax())


def attention_rollout(
    attentions: Sequence[torch.Tensor], *, residual: float = 0.5, head_fusion: str = "mean"
) -> torch.Tensor:
    """Attention rollout through the layers.

    Args:
        attentions: per layer, (B, heads, T, T) attention weights (rows sum to 1).
        residual: weight of the identity (the residual connection) in each layer's mix.
        head_fusion: ``mean``, ``max`` or ``min`` over heads.

    Returns:
        (B, T, T) rolled-out attention, rows summing to 1.
    """
    fuse = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion must be one of {sorted(fuse)}, got {head_fusion!r}")
    if not attentions:
        raise ValueError("no attention layers given")
    first = attentions[0]
    eye = torch.eye(first.shape[-1], dtype=torch.float32, device=first.device)
    rollout = eye.expand(first.shape[0], -1, -1)
    for att in attentions:
        a = (1 - residual) * fuse[head_fusion](att.float()) + residual * eye  # (B, T, T)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a @ rollout
    return rollout


def token_relevance(rollout: torch.Tensor, n_patches: int) -> torch.Tensor:
    """(B, n_patches) relevance of each patch to the pooled token.

    With a class token (T = n_patches + 1), its row; without one (mean-pooled towers), the mean
    of the patch rows.
    """
    t = rollout.shape[-1]
    if t == n_patches + 1:
        return rollout[:, 0, 1:]
    if t == n_patches:
        return rollout.mean(dim=1)
    raise LgaError(f"{t} tokens do not match a grid of {n_patches} patches")


def grad_cam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM over tokens.

    Args:
        activations: (B, N, D) patch-token activations.
        grads: (B, N, D) gradients of the score with respect to them.

    Returns:
        (B, N) ReLU(Σ_d w_d a_{n,d}) with w = gradients averaged over the tokens.
    """
    weights = grads.mean(dim=1, keepdim=True)  # (B, 1, D)
    return F.relu((weights * activations).sum(dim=-1))


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Scale each map of (B, N) to [0, 1] (an all-equal map becomes zeros)."""
    lo = x.amin(dim=1, keepdim=True)
    span = x.amax(dim=1, keepdim=True) - lo
    return (x - lo) / span.clamp_min(1e-12)


def _grid(maps: torch.Tensor) -> np.ndarray:
    """(B, N) -> (B, h, w) square patch grids."""
    side = math.isqrt(maps.shape[1])
    if side * side != maps.shape[1]:
        raise LgaError(f"{maps.shape[1]} patches do not form a square grid")
    return maps.reshape(-1, side, side).detach().cpu().numpy()


@contextmanager
def eager_attention(student: Student) -> Iterator[None]:
    """Switch the student to eager attention (which returns weights), then back."""
    model = student.model
    before = getattr(model.config, "_attn_implementation", None)
    if before == "eager" or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _display_images(student: Student, pixels: torch.Tensor) -> np.ndarray:
    """(B, H, W, 3) in [0, 1]: the processor's normalisation undone."""
    proc = student.image_processor
    mean = torch.tensor(getattr(proc, "image_mean", [0.0] * 3)).view(1, 3, 1, 1)
    std = torch.tensor(getattr(proc, "image_std", [1.0] * 3)).view(1, 3, 1, 1)
    return (pixels.float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _vision_forward(student: Student, pixels: torch.Tensor):
    """(projected image embeddings (B, D), attentions per layer, tokens entering the last block).

    Calls the vision tower itself (not ``get_image_features``), whose output carries attentions
    and hidden states in transformers 4 and 5 alike.
    """
    model = student.model
    vision = getattr(model, "vision_model", None)
    if vision is None:
        raise LgaError(f"{student.spec} has no vision_model; explain needs a CLIP-family ViT")
    out = vision(
        pixel_values=pixels.to(student.device, student.dtype),
        output_attentions=True,
        output_hidden_states=True,
    )
    attentions, hidden = getattr(out, "attentions", None), getattr(out, "hidden_states", None)
    if not attentions or attentions[0] is None or not hidden:  # ALIGN's EfficientNet has none
        raise LgaError(f"{student.spec} returns no attention weights; explain needs a ViT")
    embeds = out.pooler_output
    projection = getattr(model, "visual_projection", None)
    if projection is not None:
        embeds = projection(embeds)
    return embeds, out.attentions, out.hidden_states[-2]


def saliency(
    student: Student,
    images: Sequence[Image.Image],
    *,
    class_names: Sequence[str],
    templates: Sequence[str],
    label: str,
) -> list[Saliency]:
    """Attention rollout and Grad-CAM of one student on a batch of images.

    Args:
        student: a CLIP-family ViT student.
        images: RGB images.
        class_names: the classes; the class prompts are ``templates`` filled with them, averaged.
        templates: prompt templates with ``{}`` (``"a photo of a {}."``).
        label: the student's name in figures.
    """
    inputs = student.image_inputs(images)
    if set(inputs) != {"pixel_values"}:  # SigLIP 2 NaFlex: patches of varying grids, no image
        raise LgaError(
            f"{student.spec} ({student.family.name}) takes {sorted(inputs)}: explain needs a "
            "fixed-resolution ViT"
        )
    pixels = inputs["pixel_values"]  # (B, 3, H, W)
    head = saved_head(student.spec, class_names, whose="explain's class list")
    with eager_attention(student), torch.enable_grad():
        with torch.no_grad():
            cls = class_text_features(student, class_names, templates)  # (C, D)
        embeds, attentions, block_in = _vision_forward(student, pixels)  # block_in: (B, T, D)
        feats = F.normalize(embeds.float(), dim=-1)  # (B, D)
        if head is not None:  # the model's own head (lga's description prototypes): its scores
            logits = feats @ head.weight.to(feats).T + head.bias.to(feats)  # (B, C)
        else:
            logits = student.logit_scale().to(feats.device) * feats @ cls.T  # (B, C)
        pred = logits.argmax(dim=-1)
        (grads,) = torch.autograd.grad(logits.gather(1, pred[:, None]).sum(), block_in)
    n_patches = _n_patches(student.model, pixels)
    first = block_in.shape[1] - n_patches  # 1 with a class token, 0 without
    rollout = token_relevance(attention_rollout([a.detach() for a in attentions]), n_patches)
    cam = grad_cam(block_in.detach()[:, first:].float(), grads[:, first:].float())
    probs = logits.detach().softmax(dim=-1).cpu().numpy()
    shown = _display_images(student, pixels)
    return [
        Saliency(label, shown[i], probs[i], r, g)
        for i, (r, g) in enumerate(zip(_grid(_unit(rollout)), _grid(_unit(cam)), strict=True))
    ]


def _n_patches(model: torch.nn.Module, pixels: torch.Tensor) -> int:
    vision = getattr(model.config, "vision_config", model.config)
    patch = int(vision.patch_size)
    return (pixels.shape[-2] // patch) * (pixels.shape[-1] // patch)


def explain(
    students: Sequence[tuple[str, Student]],
    images: Sequence[Image.Image],
    *,
    class_names: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 8,
) -> list[list[Saliency]]:
    """Maps of every student on every image: ``result[image][student]``."""
    per_student = []
    for label, student in students:
        maps: list[Saliency] = []
        for i in range(0, len(images), batch_size):
            maps += saliency(
                student,
                images[i : i + batch_size],
                class_names=class_names,
                templates=templates,
                label=label,
            )
        per_student.append(maps)
        log.info("saliency maps of %s on %d image(s)", label, len(images))
    return [list(row) for row in zip(*per_student, strict=True)]


# ---------------------------------------------------------------------------------------------
# Figures


def _upsample(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(grid).float()[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def probs_text(probs: np.ndarray, class_names: Sequence[str], *, top: int = 3) -> str:
    """``"landbird 0.63 · waterbird 0.37"`` (the ``top`` most probable classes)."""
    order = np.argsort(-probs)[:top]
    return " · ".join(f"{class_names[k]} {probs[k]:.2f}" for k in order)


def saliency_figure(
    maps: Sequence[Saliency],
    *,
    class_names: Sequence[str],
    title: str = "",
    true_class: int | None = None,
):
    """One figure for one image: the image, then per student its rollout and Grad-CAM overlays.

    Returns:
        The matplotlib figure (a ``Figure``, made without pyplot; the caller saves it).
    """
    from matplotlib.figure import Figure

    n = len(maps)
    fig = Figure(figsize=(2.3 + 4.2 * n, 3.2), layout="constrained")
    subs = fig.subfigures(1, n + 1, width_ratios=[1.1] + [2] * n, wspace=0.02)
    ax = subs[0].subplots()
    ax.imshow(maps[0].image)
    ax.set_title("image (as the model sees it)", fontsize=9)
    if true_class is not None:
        ax.set_xlabel(f"true class: {class_names[true_class]}", fontsize=9)
    _no_ticks(ax)
    for sub, s in zip(subs[1:], maps, strict=True):
        _student_panel(sub, s, class_names, true_class)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _student_panel(sub, s: Saliency, class_names: Sequence[str], true_class: int | None) -> None:
    verdict = class_names[s.pred]
    color = "black" if true_class is None else "#1e8449" if s.pred == true_class else "#c0392b"
    sub.suptitle(
        f"{s.label}: predicts {verdict}\n{probs_text(s.probs, class_names)}",
        fontsize=10,
        color=color,
    )
    size = s.image.shape[:2]
    for ax, grid, name in zip(
        sub.subplots(1, 2),
        (s.rollout, s.gradient),
        ("attention rollout", f"Grad-CAM ({verdict})"),
        strict=True,
    ):
        ax.imshow(s.image)
        ax.imshow(_upsample(grid, size), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        _no_ticks(ax)


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def write_saliency_figures(
    students: Sequence[tuple[str, Student]],
    images: Sequence[Image.Image],
    names: Sequence[str],
    out_dir: str | Path,
    *,
    class_names: Sequence[str],
    templates: Sequence[str],
    true_classes: Sequence[int | None] | None = None,
    titles: Sequence[str] | None = None,
    dpi: int = 120,
) -> list[Path]:
    """``explain`` and one PNG per image (``out_dir/<name>.png``).

    Args:
        students: (label, student) pairs, e.g. pre-trained then fine-tuned.
        images: RGB images.
        names: file stems, one per image.
        out_dir: created if missing.
        class_names, templates: the class prompts.
        true_classes: optional true class index per image (shown under the image).
        titles: optional figure title per image.
    """
    out = Path(out_dir)
    make_output_dir(out, what="explain folder")
    results = explain(students, images, class_names=class_names, templates=templates)
    paths = []
    for k, maps in enumerate(results):
        fig = saliency_figure(
            maps,
            class_names=class_names,
            title=titles[k] if titles else names[k],
            true_class=true_classes[k] if true_classes else None,
        )
        path = out / f"{names[k]}.png"
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths
