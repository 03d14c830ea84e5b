"""TOPIQ-NR (CFANet, ResNet50) on KonIQ-10k, BPCLIP's baseline under BPCLIP's protocol: the splits
and selection of configs/koniq_nr.py (8:2 random, selected on 10% of the training part held out,
reported on the 20%), TOPIQ's recipe (base.topiq: Norm-in-Norm + MSE, horizontal flips, lr 3e-5,
as pyiqa's train_TOPIQ_res50_koniq.yml).

    python main.py --config configs/topiq_koniq_nr.py --workdir runs/topiq_koniq \
        --config.data.root=data/koniq10k
    python -m bpclip_jax.protocol --config configs/topiq_koniq_nr.py --workdir runs/topiq_koniq --splits 10

Paper (Table II, TOPIQ's row, PLCC / SRCC): .935 / .922; BPCLIP's row: .939 / .928 (configs/koniq_nr.py).
"""

from configs import base, koniq_nr

PAPER = {"koniq10k/test": (.935, .922)}


def get_config(arg=None):
    return base.topiq(koniq_nr.get_config(arg))
