"""BPCLIP-NR on the embedded synthetic KonIQ-format set, offline, on CPU (the NR twin of demo_fr).

    python main.py --config configs/demo_nr.py --workdir runs/demo_nr

Builds the synthetic NR set (data_pipelines.synthetic --kind nr, SYNTHETIC labels) into
data/synthetic_nr if absent, trains from random weights and tests on its official-split test
photographs, which no training image shows.
"""

from configs import demo_fr


def get_config(arg=None):
    config = demo_fr.get_config(arg)
    config.model.full_reference = False
    config.data.dataset = "koniq10k"
    config.data.root = "data/synthetic_nr"
    config.data.synthetic = "nr"
    config.data.official_split = True
    config.data.by_content = False
    return config
