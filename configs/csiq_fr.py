"""BPCLIP-FR on CSIQ, the paper's protocol: 6:2:2 split by reference, the best validation
checkpoint tested on the test part; ten split seeds for the paper's mean and std.

    python main.py --config configs/csiq_fr.py --workdir runs/csiq_fr --config.data.root=data/csiq
    python -m bpclip_jax.protocol --config configs/csiq_fr.py --workdir runs/csiq_fr --splits 10

Paper (PLCC / SRCC, mean of ten splits): .982 / .982.
"""

from configs import base

PAPER = {"csiq/test": (.982, .982)}


def get_config(arg=None):
    config = base.get_config(arg)
    config.data.dataset = "csiq"
    config.data.root = "data/csiq"
    return config
