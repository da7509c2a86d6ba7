"""The GPU path: ViT-L/14 fine-tuning images/s and MFU, LLaVA-1.5-7b tokens/s at batch 1 vs 16.

One prepared script for a CUDA machine (random weights: nothing is downloaded)::

    python benchmarks/gpu_check.py --json gpu.json          # about 3-5 minutes on one H100/H200

It prints one JSON object:

- ``clip_vit_l14``: a ViT-L/14-shaped random CLIP fine-tuned by the real ``lga`` trainer
  (:func:`lga.bench.train.train_pipeline_efficiency`: bf16 autocast, fused AdamW, TF32, SDPA), with
  gradient checkpointing off and on: images/s of the full step and of the bare forward+backward,
  model FLOPs per step (forward + backward, counted by ``torch.utils.flop_counter``, without the
  recomputation of checkpointing) and model FLOP utilisation = FLOPs/s / the GPU's dense bf16 peak.
- ``llava_7b``: a LLaVA-1.5-7b-shaped random model (CLIP ViT-L/14-336 tower, 576 image tokens,
  Llama-2-7b text model; bf16, initialised on the GPU) generating greedy answers of exactly
  ``--new-tokens`` tokens for batches of 1 and 16 (image, prompt) pairs through the processor
  and ``generate``, as :class:`lga.teacher.hf.HFTeacher` does: tokens/s and the batch speedup.

Without CUDA it says so and exits (status 0) without measuring; ``--smoke`` runs the same code
on tiny shapes on the CPU (used by the tests). It was written on a machine without a GPU and has
only run in ``--smoke`` mode there: see docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("gpu_check")

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 80GB HBM3": 989.4,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,
    "L40S": 362.1,
    "A10G": 70.0,
    "L4": 121.0,
}

# LLaVA-1.5-7b (llava-hf/llava-1.5-7b-hf): CLIP ViT-L/14 at 336 px + Llama-2-7b.
LLAVA_7B = {
    "vision": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768,
    ),
    "text": dict(
        vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    ),
}  # fmt: skip
LLAVA_TINY = {
    "vision": dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=32,
    ),
    "text": dict(
        vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
    ),
}  # fmt: skip
PROMPT = (
    "Identify the bird in the image and describe distinguishing features of the bird in the "
    "image. Ignore the background, be concise."
)


def peak_tflops(device_name: str, override: float | None) -> float | None:
    """The GPU's dense bf16 peak (TFLOP/s): ``override``, else the table's longest match."""
    if override is not None:
        return override
    matches = [k for k in PEAK_BF16_TFLOPS if k.lower() in device_name.lower()]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] if matches else None


# ---------------------------------------------------------------------------------------------
# CLIP ViT-L/14 fine-tuning


def clip_check(
    workdir: Path, *, smoke: bool, batch: int, steps: int, peak: float | None, compile_: bool
) -> dict[str, Any]:
    """Full-step and bare images/s, FLOPs and MFU, gradient checkpointing off and on."""
    from lga.bench.train import train_pipeline_efficiency
    from lga.testing.bench_data import fill_descriptions, make_bench_dataset
    from lga.testing.clip import build_clip, random_clip

    device = "cpu" if smoke else "cuda"
    data = make_bench_dataset(
        workdir / "data", n_train=batch * (steps + 2), size=32 if smoke else 256
    )
    store = fill_descriptions(workdir / "descriptions.sqlite", data)
    clip = build_clip(workdir / "clip") if smoke else random_clip(workdir, shape="vit-l14")
    variants = {"no_checkpointing": {}, "gradient_checkpointing": {"gradient_checkpointing": True}}
    if compile_:
        variants["compiled"] = {"compile": True}
    workers = min(4, os.cpu_count() or 1)  # the pixels are preprocessed once, before timing
    out: dict[str, Any] = {"shape": "tiny (smoke)" if smoke else "ViT-L/14, 224 px"}
    model_flops = None  # of the step without checkpointing: recomputation is not model work
    for name, train in variants.items():
        log.info("CLIP fine-tuning step, %s", name)
        r = train_pipeline_efficiency(
            data, store, clip, workdir, batch_size=batch, steps=steps, num_workers=workers,
            device=device, train=train, count_flops=model_flops is None,
        )  # fmt: skip
        model_flops = model_flops or r["flops_per_step"]
        flops_per_s = model_flops / r["seconds"]["full"]
        out[name] = {
            "images_per_s": r["images_per_s"],
            "efficiency_vs_bare": r["value"],
            "model_flops_per_step": model_flops,
            "tflops_per_s": round(flops_per_s / 1e12, 2),
            "mfu": round(flops_per_s / (peak * 1e12), 4) if peak else None,
            "seconds": r["seconds"],
            "optimizer_step_s": r["optimizer_step_s"],
            "sizes": r["sizes"],
        }
    return out


# ---------------------------------------------------------------------------------------------
# LLaVA-1.5-7b generation


def build_llava(shape: dict, *, device: str, dtype: Any) -> tuple[Any, Any]:
    """A random ``LlavaForConditionalGeneration`` of ``shape`` made on ``device``, its processor."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from lga.testing.tiny_llava import BOS, DEFAULT_CORPUS, EOS, IMAGE, LLAVA_15_CHAT_TEMPLATE, PAD
    from lga.testing.tokenizers import LLAVA_TOKENS, build_word_tokenizer

    tok = build_word_tokenizer(
        [*DEFAULT_CORPUS, PROMPT.lower()], max_length=512, specials=LLAVA_TOKENS
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in (BOS, EOS, PAD, IMAGE)}
    vision = CLIPVisionConfig(**shape["vision"])
    side = vision.image_size // vision.patch_size
    config = LlavaConfig(
        vision_config=vision,
        text_config=LlamaConfig(
            **shape["text"], bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD]
        ),
        image_token_index=ids[IMAGE],
        image_seq_length=side * side,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        pad_token_id=ids[PAD],
    )
    import transformers

    torch.manual_seed(0)
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    with torch.device(device):  # weights are created (and initialised) on the GPU directly
        model = LlavaForConditionalGeneration._from_config(config, **{dtype_kw: dtype})
    model.eval()
    size = vision.image_size
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        ),
        tokenizer=tok,
        patch_size=vision.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_15_CHAT_TEMPLATE,
    )
    return model, processor


def generate(model: Any, processor: Any, images: list, *, new_tokens: int, dtype: Any) -> None:
    """Greedy answers of exactly ``new_tokens`` tokens, as ``HFTeacher.generate`` asks for them."""
    import torch

    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True)
    inputs = processor(
        images=images, text=[text] * len(images), padding=True, return_tensors="pt"
    ).to(model.device, dtype)
    with torch.inference_mode():
        model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=processor.tokenizer.pad_token_id,
        )


def llava_check(*, smoke: bool, batches: list[int], new_tokens: int) -> dict[str, Any]:
    """Tokens/s of the LLaVA-shaped model at each batch size, and the speedup over batch 1."""
    import numpy as np
    import torch
    from PIL import Image

    from lga.bench.common import timed

    device, dtype = ("cpu", torch.float32) if smoke else ("cuda", torch.bfloat16)
    model, processor = build_llava(LLAVA_TINY if smoke else LLAVA_7B, device=device, dtype=dtype)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8))
        for _ in range(max(batches))
    ]
    generate(model, processor, images[:1], new_tokens=4, dtype=dtype)  # warm-up
    out: dict[str, Any] = {
        "shape": "tiny (smoke)" if smoke else "LLaVA-1.5-7b (CLIP ViT-L/14-336 + Llama-2-7b)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "attn_implementation": model.config._attn_implementation,
        "new_tokens": new_tokens,
        "image_tokens": model.config.image_seq_length,
    }
    for b in batches:
        seconds = timed(
            lambda b=b: generate(model, processor, images[:b], new_tokens=new_tokens, dtype=dtype)
        )
        out[f"batch_{b}"] = {
            "seconds": round(seconds, 3),
            "tokens_per_s": round(b * new_tokens / seconds, 1),
            "answers_per_s": round(b / seconds, 3),
        }
    first, last = out[f"batch_{batches[0]}"], out[f"batch_{batches[-1]}"]
    out["speedup"] = round(last["tokens_per_s"] / first["tokens_per_s"], 2)
    if torch.cuda.is_available() and not smoke:
        out["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return out


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (tests)")
    p.add_argument("--clip-batch", type=int, default=64, help="ViT-L/14 images per step")
    p.add_argument("--clip-steps", type=int, default=5, help="timed steps of each kind")
    p.add_argument("--compile", action="store_true", help="also time train.compile=true")
    p.add_argument("--new-tokens", type=int, default=128, help="tokens per LLaVA answer")
    p.add_argument("--batches", default="1,16", help="LLaVA batch sizes")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 peak")
    p.add_argument("--skip", choices=["clip", "llava"], action="append", default=[])
    p.add_argument("--workdir", type=Path, default=None, help="keep assets here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU here, nothing measured. Run it on a CUDA machine; "
            "`lga bench` measures the CPU figures.",
            file=sys.stderr,
        )
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0
    from lga.bench.common import machine_info

    machine = machine_info()
    if torch.cuda.is_available():
        machine["cuda"] = torch.version.cuda
        machine["gpu_count"] = torch.cuda.device_count()
    peak = None if args.smoke else peak_tflops(machine["device"], args.peak_tflops)
    results: dict[str, Any] = {"machine": machine, "peak_bf16_tflops": peak}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lga-gpu-check-"))
    start = time.perf_counter()
    if "clip" not in args.skip:
        results["clip_vit_l14"] = clip_check(
            workdir,
            smoke=args.smoke,
            batch=args.clip_batch,
            steps=args.clip_steps,
            peak=peak,
            compile_=args.compile,
        )
    if "llava" not in args.skip:
        batches = [int(b) for b in args.batches.split(",")]
        results["llava_7b"] = llava_check(
            smoke=args.smoke, batches=batches, new_tokens=args.new_tokens
        )
    results["wall_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
