"""Turn a pretraining log of docs/experiments/pretrain_probe.py into a JSON curve file.

python docs/experiments/collect_toy_curve.py NAME LOG 'CONFIG_JSON' > toys/NAME.json
"""

import json
import sys

name, log, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
curve = []
for line in open(log):
    if line.startswith("PROBE "):
        _, epoch, payload = line.split(" ", 2)
        curve.append({"epoch": int(epoch), **json.loads(payload)})
print(json.dumps({"name": name, "config": config, "curve": curve}, indent=1))
