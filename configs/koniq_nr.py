"""BPCLIP-NR on KonIQ-10k (8:2 random split); no validation part, the last checkpoint is tested
(ten split seeds for the paper's mean and std).

    python main.py --config configs/koniq_nr.py --workdir runs/koniq_nr --config.data.root=data/koniq10k
    python -m bpclip_jax.protocol --config configs/koniq_nr.py --workdir runs/koniq_nr --splits 10

Paper (PLCC / SRCC): .939 / .928.
"""

from configs import base

PAPER = {"koniq10k/test": (.939, .928)}


def get_config(arg=None):
    config = base.random_nr_split(base.no_reference(base.get_config(arg)))
    config.data.dataset = "koniq10k"
    config.data.root = "data/koniq10k"
    return config
