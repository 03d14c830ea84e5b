"""BPCLIP-NR on SPAQ (8:2 random split, shorter side 448), reported on the 20% (ten split seeds for
the paper's mean and std). The checkpoint is selected on 10% of the training part held out
(base.random_nr_split); add `--config.data.select_part=test` for pyiqa/TOPIQ's practice (select
on the reported part, labelled optimistic).

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
