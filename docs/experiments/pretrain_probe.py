"""Pretrain a toy CLIP with a ToyConfig given as JSON, probing it on the demo world as it learns.

    python docs/experiments/pretrain_probe.py OUT 'CONFIG_JSON' [THREADS] > LOG

Prints a ``PROBE <epoch> {json}`` line about six times during training (balanced probe, zero-shot
per group, probe fit on the biased sample: lga.evaluation.probe) and saves the checkpoint to OUT.
"""

import json
import logging
import sys

import torch

from lga.workflows.toy import ToyConfig, pretrain_toy, probe_model, probe_world

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
cfg = ToyConfig(**json.loads(sys.argv[2]))
world = probe_world()
every = cfg.epochs // 6 or 1


def on_epoch(m, p, e):
    if e % every and e != cfg.epochs:
        return {}
    r = probe_model(m, p, world)
    print("PROBE", e, json.dumps(r), flush=True)
    return r


pretrain_toy(sys.argv[1], cfg, progress=False, on_epoch=on_epoch)
