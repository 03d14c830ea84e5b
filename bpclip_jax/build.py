"""BPCLIP (or TOPIQ's CFANet) from a config: the model switches plus where its pretrained parts
come from.

It lives beside weights.py and text.py, not in models/: the models know shapes and equations, this
module knows where pretrained weights come from.
"""

from __future__ import annotations

import logging

import jax.numpy as jnp
import ml_collections
from flax import nnx

from bpclip_jax import text, weights
from bpclip_jax.errors import UserError
from bpclip_jax.models.bpclip import BPCLIP, TEXT_HEADS
from bpclip_jax.models.cfanet import CFANet

log = logging.getLogger(__name__)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def uses_text(cfg: ml_collections.ConfigDict) -> bool:
    """Whether the model a config's `model` field describes has BPCLIP's text branch."""
    return cfg.arch == "bpclip" and bool(cfg.use_text)


def create_model(cfg: ml_collections.ConfigDict, *, dtype: str = "float32", seed: int = 0,
                 restoring: bool = False) -> BPCLIP | CFANet:
    """BPCLIP as `cfg` (a config's `model` field) describes it.

    cfg.pretrained=True loads the ImageNet ResNet50 from `cfg.resnet_source` and encodes the 40
    prompts with the CLIP text tower of `cfg.clip_source` (cached), failing loudly when either
    cannot be had. False starts from random weights and stand-in text features
    (`cfg.stand_in_text`, text.stand_in_features), and logs so, unless
    `restoring` says that a checkpoint's values replace them right away.
    `cfg.arch='cfanet'` builds TOPIQ's CFANet instead (create_cfanet).
    """
    if cfg.arch == "cfanet":
        return create_cfanet(cfg, dtype=dtype, seed=seed, restoring=restoring)
    if cfg.arch != "bpclip":
        raise UserError(f"config.model.arch={cfg.arch!r}: must be 'bpclip' or 'cfanet'")
    if cfg.text_head not in TEXT_HEADS:
        raise UserError(f"model.text_head={cfg.text_head!r}: expected one of {', '.join(TEXT_HEADS)}")
    if cfg.pretrained and not restoring:
        features = text.prompt_features(cfg.clip_source)
    else:
        say = log.debug if restoring else log.warning
        say("model: pretrained=False, so the backbone starts from random weights and the text "
            "features are stand-ins for CLIP's (offline runs and tests only)")
        try:
            features = text.stand_in_features(cfg.stand_in_text, len(text.PROMPTS), cfg.clip_dim, seed)
        except ValueError as err:
            raise UserError(str(err)) from None
    model = BPCLIP(
        features, full_reference=cfg.full_reference, dim=cfg.dim, heads=cfg.heads,
        ffn_dim=cfg.ffn_dim, dropout=cfg.dropout, pos_grid=cfg.pos_grid, branches=cfg.branches,
        direction=cfg.direction, progressive=cfg.progressive, use_text=cfg.use_text,
        text_head=cfg.text_head, dtype=DTYPES[dtype], rngs=nnx.Rngs(seed))
    if cfg.pretrained and not restoring:
        backbone = weights.load_resnet50(cfg.resnet_source)
        nnx.update(model.backbone, nnx.state(backbone))
    return model


def create_cfanet(cfg: ml_collections.ConfigDict, *, dtype: str = "float32", seed: int = 0,
                  restoring: bool = False) -> CFANet:
    """TOPIQ's CFANet as `cfg` describes it; cfg.pretrained=True loads the ImageNet ResNet50 from
    `cfg.resnet_source` (there are no text features)."""
    if not cfg.pretrained and not restoring:
        log.warning("model: pretrained=False, so the backbone starts from random weights (offline "
                    "runs and tests only)")
    model = CFANet(full_reference=cfg.full_reference, dim=cfg.dim, heads=cfg.heads, ffn_dim=cfg.ffn_dim,
                   dropout=cfg.dropout, pos_grid=cfg.pos_grid, out_act=cfg.out_act,
                   test_size=cfg.test_size, dtype=DTYPES[dtype], rngs=nnx.Rngs(seed))
    if cfg.pretrained and not restoring:
        nnx.update(model.backbone, nnx.state(weights.load_resnet50(cfg.resnet_source)))
    return model
