"""The toy CLIP of the embedded demo: a small CLIP pretrained on a synthetic caption corpus.

``lga pretrain-toy`` renders "Waterbirds in miniature" images (:mod:`lga.data.synth`) with
web-like captions and trains a ~1.5M-parameter CLIP on them contrastively. Like web data, the
corpus is biased: most waterbirds are pictured on water and most landbirds on land, and captions
often name the class together with the place ("a waterbird on a lake"). The resulting model
carries a background bias into zero-shot classification, as real CLIP does on Waterbirds.

The checkpoint is deterministic for a config and seed on a given torch build (rebuilding the
shipped one with ``lga pretrain-toy`` gave bit-identical weights with torch 2.13.0 on CPU), and it
is shipped in the package (``lga/assets/toy-clip``), so the demo does not pretrain each time.
``lga_toy.json`` beside the weights records the ToyConfig, the steps and the time it took.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from lga.student.model import pooled
from lga.student.toy import (  # noqa: F401 (re-exported: the toy's names, one place)
    PROVENANCE_FILE,
    TOY_ASSET,
    TOY_STUDENT,
    resolve_student,
    toy_checkpoint,
)
from lga.train.losses import clip_loss

log = logging.getLogger(__name__)

IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]  # CLIP's statistics
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


class ToyConfig(BaseModel):
    """How the toy CLIP is built and pretrained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 1234  # the corpus seed; the demo's datasets use other seeds
    n_images: int = Field(12000, gt=0)
    corpus_correlation: float = Field(0.95, ge=0.5, le=1.0)  # P(place matches class) on the "web"
    class_caption_rate: float = Field(0.1, ge=0.0, le=1.0)  # captions that name the class
    # Share of bird descriptions in captions (and field guides) that keep the class word ("a
    # heron, a waterbird"); the others say "a bird". Below 1, the class words are learned mostly
    # from the class captions, which name the place too: a more background-biased zero-shot rule.
    description_class_rate: float = Field(0.0, ge=0.0, le=1.0)
    # Share of the corpus that are habitat photos without a bird, captioned with the class word
    # and the place ("a waterbird habitat, a calm lake"): where the web teaches what the class
    # words mean from where the birds live, not from how they look.
    habitat_rate: float = Field(0.35, ge=0.0, le=1.0)
    # Whether class captions may pair the species with the class ("a heron, a waterbird.").
    species_class_captions: bool = True
    bird_scale: float = 1.6  # birds drawn larger than synth's default: the toy ViT must see them
    guide_rate: float = Field(0.15, ge=0.0, le=1.0)  # field-guide plates: the bird on plain paper
    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 96
    vision_layers: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    projection_dim: int = 128
    max_length: int = 48
    epochs: int = 12
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    # Species knowledge given directly (an auxiliary objective, stated as such in the docs): a
    # second corpus of background-balanced scenes (place independent of class), on which a linear
    # head over the image embedding learns the species and every visible trait by cross-entropy.
    # The head is discarded; what stays is an image encoder that sees the bird, while the
    # contrastive captions above keep the class words tied to the places they co-occur with.
    balanced_images: int = Field(12000, ge=0)
    species_weight: float = Field(2.0, ge=0.0)
    trait_weight: float = Field(1.0, ge=0.0)  # per-trait cross-entropy (neck, feet, bill, ...)
    aux_batch_size: int = Field(128, gt=1)


_PLACE_PHRASES = {"lake": "on a lake", "ocean": "at the ocean", "forest": "in a forest",
                  "grass": "on the grass"}  # fmt: skip
_CLASS_CAPTIONS = ("a photo of a {cls} {where}.", "a {cls} {where}.", "a photo of a {cls}.",
                   "a {species}, a {cls}.")  # fmt: skip


def _text_attrs(cfg: ToyConfig, attrs: dict, img_id: int) -> dict:
    """The attributes a description caption is written from: the class word replaced by "bird"
    for a ``1 - description_class_rate`` share (its own generator: the rest of the corpus is the
    same draw for every rate)."""
    if cfg.description_class_rate >= 1.0:
        return attrs
    if np.random.default_rng([cfg.seed, img_id, 11]).random() < cfg.description_class_rate:
        return attrs
    return {**attrs, "class_name": "bird"}


def _caption(
    attrs: dict,
    img_id: int,
    rng: np.random.Generator,
    class_rate: float,
    true_attrs: dict,
    n_templates: int = len(_CLASS_CAPTIONS),
) -> str:
    """A web-like caption: class and place, or object and background descriptions."""
    from lga.teacher.oracle import background_text, object_keywords, object_text

    if rng.random() < class_rate:
        where = _PLACE_PHRASES.get(attrs["background"], f"at the {attrs['background']}")
        template = _CLASS_CAPTIONS[int(rng.integers(n_templates))]  # the last names the species
        cls = true_attrs["class_name"]  # class captions always name the class
        return template.format(cls=cls, where=where, species=attrs["species"])
    prompt = str(rng.choice(["caption", "web", "alt"]))
    describe = object_text if rng.random() < 0.7 else object_keywords
    parts = [describe(attrs, img_id, prompt)]
    if rng.random() < 0.6:
        parts.append(background_text(attrs, img_id, prompt))
    return " ".join(parts)


def field_guide_plate(seed: int, img_id: int, y: int, size: int):
    """A bird alone and large on plain paper, as in a field guide (no background cue at all).

    The web holds such pictures besides scenes; they are where a model can learn what a bird
    looks like without the place it stands in.
    """
    from lga.data import synth
    from lga.data.synth import draw

    rng = np.random.default_rng([seed, img_id, 7])
    attrs = synth.sample_attributes(rng, y, int(rng.integers(2)))
    attrs["background"] = "paper"
    k = draw.render_scale(size)
    side = size * k
    paper = tuple(int(v) for v in rng.integers(215, 250, 3))
    img = Image.new("RGB", (side, side), paper)
    sprite = draw.bird_sprite(rng, attrs, int(side * rng.uniform(1.6, 2.2)))[0]
    scale = 0.85 * side / max(sprite.size)
    if scale < 1:
        sprite = sprite.resize(
            (max(1, int(sprite.width * scale)), max(1, int(sprite.height * scale)))
        )
    x = (side - sprite.width) // 2 + int(rng.integers(-side // 10, side // 10 + 1))
    top = (side - sprite.height) // 2 + int(rng.integers(-side // 10, side // 10 + 1))
    img.paste(sprite, (x, top), sprite)
    return draw.finish(rng, img, k), {"img_id": img_id, "y": y, **attrs}


def _guide_caption(attrs: dict, img_id: int, rng: np.random.Generator) -> str:
    """A field guide's caption: the bird only."""
    from lga.teacher.oracle import object_keywords, object_text

    kind = rng.random()
    if kind < 0.3:
        return f"a {attrs['species']}, a {attrs['class_name']}."
    describe = object_text if kind < 0.8 else object_keywords
    return describe(attrs, img_id, str(rng.choice(["caption", "web", "alt"])))


_HABITAT_CAPTIONS = ("a {cls} habitat, {where}.", "where {cls}s live: {where}.",
                     "{where}, home of the {cls}.")  # fmt: skip


def habitat_photo(rng: np.random.Generator, y: int, size: int):
    """A place where birds of class ``y`` live (land for landbirds), with no bird in it."""
    from lga.data import synth
    from lga.data.synth import draw

    background = synth.BACKGROUNDS[y][int(rng.integers(2))]
    k = draw.render_scale(size)
    img, _ = draw.BACKGROUND_DRAWERS[background](rng, size * k)
    attrs = {"class_name": synth.CLASSES[y], "species": None, "background": background}
    return draw.finish(rng, img, k), attrs


def habitat_caption(rng: np.random.Generator, attrs: dict) -> str:
    from lga.teacher.oracle import BACKGROUND

    where = BACKGROUND[attrs["background"]][int(rng.integers(2))]
    template = _HABITAT_CAPTIONS[int(rng.integers(len(_HABITAT_CAPTIONS)))]
    return template.format(cls=attrs["class_name"], where=where)


def toy_corpus(
    cfg: ToyConfig, *, progress: bool = False
) -> tuple[np.ndarray, list[str], list[dict]]:
    """Render the pretraining corpus: images (N, H, W, 3) uint8, captions and attributes."""
    from lga.data.synth import render_example

    rng = np.random.default_rng(cfg.seed)
    images, captions, attrs_all = [], [], []
    for i in tqdm(range(cfg.n_images), desc="rendering corpus", unit="img", disable=not progress):
        y = int(rng.random() < 0.5)
        place = y if rng.random() < cfg.corpus_correlation else 1 - y
        own = None  # the habitats' own generator, drawn from only when there are habitats
        if cfg.habitat_rate > 0:
            own = np.random.default_rng([cfg.seed, i + 1, 13])
        if own is not None and own.random() < cfg.habitat_rate:
            rng.random()  # the guide-plate draw, kept so the other images stay the same
            img, attrs = habitat_photo(own, y, cfg.image_size)
            captions.append(habitat_caption(own, attrs))
        elif rng.random() < cfg.guide_rate:
            img, attrs = field_guide_plate(cfg.seed, i + 1, y, cfg.image_size)
            captions.append(_guide_caption(_text_attrs(cfg, attrs, i + 1), i + 1, rng))
        else:
            img, attrs = render_example(cfg.seed, i + 1, y, place, cfg.image_size, cfg.bird_scale)
            text_attrs = _text_attrs(cfg, attrs, i + 1)
            n_templates = len(_CLASS_CAPTIONS) - (not cfg.species_class_captions)
            captions.append(
                _caption(text_attrs, i + 1, rng, cfg.class_caption_rate, attrs, n_templates)
            )
        images.append(np.asarray(img, dtype=np.uint8))
        attrs_all.append(attrs)
    return np.stack(images), captions, attrs_all


def vocabulary_texts(n_draws: int = 2000) -> list[str]:
    """Every phrasing the captions, the oracle teacher and the prompts can produce.

    Drawn from attribute samples alone (no images, fixed seed), so the vocabulary, and with it
    the checkpoint's shape, does not depend on the corpus size.
    """
    from lga.data.synth import SYNTH_SPEC, sample_attributes
    from lga.teacher.oracle import (
        background_keywords,
        background_text,
        object_keywords,
        object_text,
    )
    from lga.teacher.prompts import SHIPPED_PROMPTS

    rng = np.random.default_rng(0)
    texts = []
    for i in range(n_draws):
        y, place = int(rng.integers(2)), int(rng.integers(2))
        attrs = sample_attributes(rng, y, place)
        for prompt in (*SHIPPED_PROMPTS, "caption", "web", "alt"):
            texts += [
                fn(attrs, i, prompt)
                for fn in (object_text, object_keywords, background_text, background_keywords)
            ]
        where = _PLACE_PHRASES.get(attrs["background"], f"at the {attrs['background']}")
        texts += [
            t.format(cls=attrs["class_name"], where=where, species=attrs["species"])
            for t in _CLASS_CAPTIONS
        ]
    from lga.data.synth import BACKGROUNDS, CLASSES
    from lga.teacher.oracle import BACKGROUND

    texts += [
        t.format(cls=c, where=w)
        for t in _HABITAT_CAPTIONS
        for c in CLASSES
        for kinds in BACKGROUNDS.values()  # the places of the corpus (no unseen place)
        for kind in kinds
        for w in BACKGROUND[kind]
    ]
    templates = [
        "a photo of a {}.",
        "a photo of the {}.",
        "a picture of a {}.",
        "a close-up photo of a {}.",
        "a good photo of a {}.",
    ]
    texts += [
        t.format(c) for t in templates + SYNTH_SPEC.class_templates for c in SYNTH_SPEC.classes
    ]
    for prompts in SYNTH_SPEC.spurious_texts().values():
        texts += prompts
    return texts


def build_toy_model(cfg: ToyConfig, tokenizer_corpus: list[str]):
    """A randomly initialised CLIPModel and its CLIPProcessor for the toy world."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from lga.offline.tokenizers import CLIP_TOKENS, build_word_tokenizer

    BOS, EOS = CLIP_TOKENS.bos, CLIP_TOKENS.eos
    tokenizer = build_word_tokenizer(tokenizer_corpus, max_length=cfg.max_length)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=cfg.text_hidden,
                         intermediate_size=4 * cfg.text_hidden, num_hidden_layers=cfg.text_layers,
                         num_attention_heads=4, max_position_embeddings=cfg.max_length,
                         eos_token_id=eos, bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
                         pad_token_id=eos),
        vision_config=dict(image_size=cfg.image_size, patch_size=cfg.patch_size,
                           hidden_size=cfg.vision_hidden, intermediate_size=4 * cfg.vision_hidden,
                           num_hidden_layers=cfg.vision_layers, num_attention_heads=4),
        projection_dim=cfg.projection_dim,
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = CLIPModel(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": cfg.image_size},
        crop_size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W), as the processor would produce."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _aux_targets(attrs: list[dict]) -> dict[str, torch.Tensor]:
    """Class indices of the species and of every visible trait, one tensor per head."""
    from lga.data.synth import ATTRIBUTE_VALUES, SPECIES, TRAITS

    heads = {"species": tuple(sorted(SPECIES)), **{t: ATTRIBUTE_VALUES[t] for t in TRAITS}}
    return {h: torch.tensor([values.index(a[h]) for a in attrs]) for h, values in heads.items()}


def balanced_corpus(cfg: ToyConfig, *, progress: bool = False):
    """The auxiliary corpus: scenes whose place is independent of the class (no plates, no
    habitats)."""
    bal = cfg.model_copy(
        update={
            "seed": cfg.seed + 1,
            "n_images": cfg.balanced_images,
            "corpus_correlation": 0.5,
            "guide_rate": 0.0,
            "habitat_rate": 0.0,
        }
    )
    images, _, attrs = toy_corpus(bal, progress=progress)
    return images, _aux_targets(attrs)


def pretrain_toy(
    out_dir: str | Path,
    cfg: ToyConfig | None = None,
    *,
    progress: bool = True,
    on_epoch: Callable[[torch.nn.Module, object, int], dict] | None = None,
    probe: bool = True,
) -> Path:
    """Render the corpus, pretrain the toy CLIP and ``save_pretrained`` it.

    The objective is CLIP's contrastive loss on the captioned corpus, plus (when
    ``cfg.balanced_images`` and a weight are set) the auxiliary species and trait cross-entropy
    on background-balanced scenes. ``on_epoch(model, processor, epoch)`` is called after every
    epoch (the model in eval mode, no gradients); what it returns is recorded as the
    provenance's ``curve``.

    With ``probe``, the finished model is probed on the demo world's scenes (:func:`probe_model`)
    and ``lga_toy.json`` records ``probe_accuracy`` and ``zero_shot_worst_group`` (fractions)
    with the rest of the diagnostics under ``probe``.
    """
    cfg = cfg or ToyConfig()
    torch.manual_seed(cfg.seed)
    images, captions, _ = toy_corpus(cfg, progress=progress)
    use_aux = cfg.balanced_images > 0 and (cfg.species_weight > 0 or cfg.trait_weight > 0)
    if use_aux:
        aux_images, aux_targets = balanced_corpus(cfg, progress=progress)
        aux_pixels = torch.from_numpy(aux_images)
    model, processor = build_toy_model(cfg, vocabulary_texts())
    heads = torch.nn.ModuleDict()
    if use_aux:
        gen_heads = torch.Generator().manual_seed(cfg.seed + 2)
        for name, target in aux_targets.items():
            head = torch.nn.Linear(cfg.projection_dim, int(target.max()) + 1)
            with torch.no_grad():
                head.weight.copy_(torch.randn(head.weight.shape, generator=gen_heads) * 0.02)
                head.bias.zero_()
            heads[name] = head
    tokens = processor.tokenizer(
        captions, padding="longest", truncation=True, max_length=cfg.max_length, return_tensors="pt"
    )
    pixels = torch.from_numpy(images)  # (N, H, W, 3) uint8
    steps_per_epoch = math.ceil(len(captions) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / total))
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    start, step, curve = time.monotonic(), 0, []
    bar = tqdm(total=total, desc="pretraining toy CLIP", unit="step", disable=not progress)
    for epoch in range(cfg.epochs):
        model.train()
        aux_batches = (
            torch.randperm(len(aux_pixels), generator=gen).split(cfg.aux_batch_size)
            if use_aux
            else []
        )
        for k, idx in enumerate(torch.randperm(len(captions), generator=gen).split(cfg.batch_size)):
            if len(idx) < 2:
                continue
            x = _normalise(pixels[idx])
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            img = F.normalize(pooled(model.get_image_features(pixel_values=x)), dim=-1)  # (B, D)
            mask = tokens["attention_mask"][idx]
            length = int(mask.sum(1).max())  # trim the batch to its longest caption
            txt = F.normalize(
                pooled(
                    model.get_text_features(
                        input_ids=tokens["input_ids"][idx, :length], attention_mask=mask[:, :length]
                    )
                ),
                dim=-1,
            )
            loss = clip_loss(img, txt, logit_scale=model.logit_scale.exp().clamp(max=100))
            if use_aux:
                aux = aux_batches[k % len(aux_batches)]
                ax = _normalise(aux_pixels[aux])
                aflip = torch.rand(len(aux), generator=gen) < 0.5
                ax[aflip] = ax[aflip].flip(-1)
                emb = F.normalize(pooled(model.get_image_features(pixel_values=ax)), dim=-1)
                for name, head in heads.items():
                    weight = cfg.species_weight if name == "species" else cfg.trait_weight
                    if weight > 0:
                        ce = F.cross_entropy(head(emb * 10.0), aux_targets[name][aux])
                        loss = loss + weight * ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if on_epoch is not None:
            model.eval()
            with torch.no_grad():
                point = {"epoch": epoch + 1, "step": step,
                         "seconds": round(time.monotonic() - start),
                         **on_epoch(model, processor, epoch + 1)}  # fmt: skip
            curve.append(point)
            log.info("toy pretraining: %s", point)
    bar.close()
    seconds = time.monotonic() - start
    log.info("pretrained toy CLIP: %d steps in %.0f s", step, seconds)
    out = Path(out_dir)
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    provenance = {
        "made_by": "lga pretrain-toy",
        "config": cfg.model_dump(mode="json"),
        "steps": step,
        "train_seconds": round(seconds),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "final_loss": round(float(loss.item()), 4) if step else None,
    }
    if probe:
        result = probe_model(model, processor, probe_world())
        provenance["probe_accuracy"] = result["probe_accuracy"]
        provenance["zero_shot_worst_group"] = result["zero_shot_worst_group"]
        provenance["probe"] = {"world": PROBE_WORLD, **result}
        log.info("probe on the demo world: %s", result)
    if curve:
        provenance["curve"] = curve
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return out


# The demo world (configs/reproduce/demo.yaml): the toy is probed on its scenes.
PROBE_WORLD = {"seed": 2024, "n_train": 2000, "n_val": 400, "n_test": 4000, "correlation": 0.95,
               "bird_scale": 1.6}  # fmt: skip


def probe_world(
    world: dict | None = None, *, n_score: int = 800, n_biased: int = 1000
) -> dict[str, tuple[torch.Tensor, np.ndarray, np.ndarray]]:
    """Scenes of a synth world rendered in memory, as ``lga data synth`` would write them:
    ``fit`` (the validation split), ``score`` (the first ``n_score`` test images) and
    ``biased`` (the first ``n_biased`` training images), each ``(uint8 pixels, y, place)``."""
    from lga.data.synth import SynthConfig, plan, render_example

    cfg = SynthConfig(**(world or PROBE_WORLD))
    rows = plan(cfg)
    out = {}
    for name, split, n in (("fit", 1, None), ("score", 2, n_score), ("biased", 0, n_biased)):
        part = rows[rows.split == split].head(n)
        imgs = [
            np.asarray(render_example(cfg.seed, int(r.img_id), int(r.y), int(r.place), cfg.size,
                                      cfg.bird_scale)[0], dtype=np.uint8)
            for r in part.itertuples()
        ]  # fmt: skip
        out[name] = (torch.from_numpy(np.stack(imgs)), part.y.to_numpy(), part.place.to_numpy())
    return out


@torch.no_grad()
def probe_model(model, processor, world: dict) -> dict:
    """:func:`lga.evaluation.probe.probe_features` of an in-memory toy on a :func:`probe_world`."""
    from lga.data.synth import SYNTH_SPEC
    from lga.evaluation.probe import probe_features
    from lga.student.model import Student, class_text_features

    model.eval()
    student = Student(model, processor, "in-memory toy", "")

    def feats(pixels: torch.Tensor) -> torch.Tensor:
        return torch.cat([student.image_features(_normalise(b)) for b in pixels.split(256)])

    class_feats = class_text_features(student, SYNTH_SPEC.classes, SYNTH_SPEC.class_templates)
    fx, fy, fp = world["fit"]
    sx, sy, sp = world["score"]
    bx, by, _ = world["biased"]
    result = probe_features(
        fit=(feats(fx), fy, fp),
        score=(feats(sx), sy, sp),
        class_feats=class_feats,
        classes=SYNTH_SPEC.classes,
        places=SYNTH_SPEC.places,
        biased_fit=(feats(bx), by),
    )
    return result.as_dict()
