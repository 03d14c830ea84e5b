"""BPCLIP-NR on KonIQ-10k's official split (Table V): train 7058, select on validation 1000, test 2015.

    python main.py --config configs/koniq_official_nr.py --workdir runs/koniq_official \
        --config.data.root=data/koniq10k

Paper (PLCC / SRCC): .945 / .932.
"""

from configs import base

PAPER = {"koniq10k/test": (.945, .932)}


def get_config(arg=None):
    config = base.no_reference(base.get_config(arg))
    config.data.dataset = "koniq10k"
    config.data.root = "data/koniq10k"
    config.data.official_split = True
    return config
