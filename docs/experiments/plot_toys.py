"""Plot the pretraining curves in docs/experiments/toys/*.json into docs/toy-pretraining.png.

python docs/experiments/plot_toys.py
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = Path(__file__).parent
runs = [json.loads(p.read_text()) for p in sorted((here / "toys").glob("*.json"))]
panels = [
    ("probe_accuracy", "balanced probe accuracy (scenes)"),
    ("zero_shot_worst_group", "zero-shot worst group"),
    ("biased_probe_worst_group", "probe fit on the biased sample:\nworst group"),
]
fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
for ax, (key, title) in zip(axes, panels, strict=True):
    for run in runs:
        pts = [
            (c["epoch"] * run["config"].get("n_images", 6000) / 1000, c[key]) for c in run["curve"]
        ]
        ax.plot(*zip(*pts, strict=True), marker="o", label=run["name"])
    ax.set_title(title)
    ax.set_xlabel("pretraining: thousands of captioned images seen")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
axes[0].axhline(0.9, color="grey", ls="--", lw=1)
axes[1].axhspan(0.15, 0.45, color="grey", alpha=0.15)
axes[0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(here.parent / "toy-pretraining.png", dpi=110)
print("wrote", here.parent / "toy-pretraining.png")
