"""BPCLIP-NR on SPAQ (8:2 random split, shorter side 448); no validation part, the last checkpoint is tested
(ten split seeds for the paper's mean and std).

    python main.py --config configs/spaq_nr.py --workdir runs/spaq_nr --config.data.root=data/spaq
    python -m bpclip_jax.protocol --config configs/spaq_nr.py --workdir runs/spaq_nr --splits 10

Paper (PLCC / SRCC): .923 / .920.
"""

from configs import base

PAPER = {"spaq/test": (.923, .920)}


def get_config(arg=None):
    config = base.random_nr_split(base.no_reference(base.get_config(arg)))
    config.data.dataset = "spaq"
    config.data.root = "data/spaq"
    return config
