"""BPCLIP-FR on TID2013, the paper's protocol: 6:2:2 split by reference, the best validation
checkpoint tested on the test part; ten split seeds for the paper's mean and std.

    python main.py --config configs/tid2013_fr.py --workdir runs/tid2013_fr --config.data.root=data/tid2013
    python -m bpclip_jax.protocol --config configs/tid2013_fr.py --workdir runs/tid2013_fr --splits 10

Paper (PLCC / SRCC, mean of ten splits): .969 / .967.
"""

from configs import base

PAPER = {"tid2013/test": (.969, .967)}


def get_config(arg=None):
    config = base.get_config(arg)
    config.data.dataset = "tid2013"
    config.data.root = "data/tid2013"
    return config
