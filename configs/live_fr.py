"""BPCLIP-FR on LIVE, the paper's protocol: 6:2:2 split by reference, the best validation
checkpoint tested on the test part; ten split seeds for the paper's mean and std.

    python main.py --config configs/live_fr.py --workdir runs/live_fr --config.data.root=data/live
    python -m bpclip_jax.protocol --config configs/live_fr.py --workdir runs/live_fr --splits 10

Paper (PLCC / SRCC, mean of ten splits): .985 / .985.
"""

from configs import base

PAPER = {"live/test": (.985, .985)}


def get_config(arg=None):
    config = base.get_config(arg)
    config.data.dataset = "live"
    config.data.root = "data/live"
    return config
