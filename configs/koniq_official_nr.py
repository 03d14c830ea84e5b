"""BPCLIP-NR on KonIQ-10k's official split (Table V): train 7058, select on validation 1000, test 2015.

    python main.py --config configs/koniq_official_nr.py --workdir runs/koniq_official \
        --config.data.root=data/koniq10k

Text head: Eq. 9 as printed, the regression on the 4 x 40 image-to-prompt cosines
(`model.text_head='cosine'`, configs/base.py's default). Fig. 1's reading, a softmax of the cosines
at CLIP's logit scale 100, is `--config.model.text_head=softmax`; in docs/design.md's study it
collapsed on CLIP-like text features (every test prediction one value, test SRCC 0.46) where the
cosines trained (0.87).

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
