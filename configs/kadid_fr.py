"""BPCLIP-FR on KADID-10k, the paper's protocol: 6:2:2 split by reference, the best validation
checkpoint tested on the test part; ten split seeds for the paper's mean and std.

    python main.py --config configs/kadid_fr.py --workdir runs/kadid_fr --config.data.root=data/kadid10k
    python -m bpclip_jax.protocol --config configs/kadid_fr.py --workdir runs/kadid_fr --splits 10

Paper (PLCC / SRCC, mean of ten splits): .964 / .963.
"""

from configs import base

PAPER = {"kadid10k/test": (.964, .963)}


def get_config(arg=None):
    config = base.get_config(arg)
    config.data.dataset = "kadid10k"
    config.data.root = "data/kadid10k"
    return config
