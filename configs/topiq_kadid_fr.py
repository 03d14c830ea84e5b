"""TOPIQ-FR (CFANet, ResNet50) on KADID-10k, BPCLIP's baseline under BPCLIP's protocol: the splits
and selection of configs/kadid_fr.py (6:2:2 by reference, the best validation checkpoint tested on
the test part), TOPIQ's recipe (base.topiq: Norm-in-Norm + MSE, horizontal flips, lr 1e-4).

    python main.py --config configs/topiq_kadid_fr.py --workdir runs/topiq_kadid \
        --config.data.root=data/kadid10k
    python -m bpclip_jax.protocol --config configs/topiq_kadid_fr.py --workdir runs/topiq_kadid --splits 10

Paper (Table II, TOPIQ's row, PLCC / SRCC): .960 / .956; BPCLIP's row: .964 / .963 (configs/kadid_fr.py).
"""

from configs import base, kadid_fr

PAPER = {"kadid10k/test": (.960, .956)}


def get_config(arg=None):
    return base.topiq(kadid_fr.get_config(arg))
