"""BPCLIP-NR on the embedded synthetic KonIQ-format set, offline, on CPU (the NR twin of demo_fr).

    python main.py --config configs/demo_nr.py --workdir runs/demo_nr

Builds the synthetic NR set (data_pipelines.synthetic --kind nr, SYNTHETIC labels) into
data/synthetic_nr if absent, trains from random weights and tests on its official-split test
photographs, which no training image shows. Unlike demo_fr the backbone is trained: without a
reference to compare with, a frozen random backbone gives the heads nothing to learn from, and NR
runs the backbone on one image per example instead of two. The whole model, under the default
text head (Eq. 9 as printed, on CLIP-like stand-in text features), at lr 2e-4 over 6 epochs.
Measured on 2 shared CPU cores (benchmarks/text_head_study.py, its NR cell): validation SRCC 0.25,
0.58, 0.39 at epochs 2, 4, 6; the checkpoint of epoch 4 selected; test SRCC 0.290, PLCC 0.609,
predictions spread 0.50 of the labels' (no collapse). Without a reference, learning distortion
from random weights on seven training photographs is slow: treat this demo as a check of the NR
code path, not of accuracy.
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
    config.train.freeze_backbone = False
    config.optim.lr = 2e-4       # demo_fr's 4e-4 is tuned for its frozen backbone
    config.optim.epochs = 6      # ~2 min an epoch on 2 CPU cores
    config.optim.t_max = 6
    return config
