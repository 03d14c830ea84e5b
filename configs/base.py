"""Every default, once. Experiment files override only what differs (DESIGN.md sections 1-4).

Run any config with `python main.py --config configs/<name>.py --workdir runs/<name>`; override a
field from the command line with `--config.optim.lr=3e-5`. `get_config("tiny")` shrinks a config for
tests and CPU smoke runs.
"""

import ml_collections


def model_config() -> ml_collections.ConfigDict:
    """The BPCLIP switches (bpclip_jax.models.bpclip.BPCLIP) and its pretrained sources."""
    return ml_collections.ConfigDict(dict(
        full_reference=True,       # FR (dist + ref) or NR
        dim=256,                   # D: token width after GLP
        heads=4,                   # attention heads
        ffn_dim=1024,              # transformer FFN width (4D)
        dropout=0.1,               # attention weights, residual branches, FFN
        pos_grid=32,               # the positional map's lattice, resized to the token grid
        clip_dim=512,              # E: CLIP projection width (random text features use it)
        branches="info+weight",    # [choice] 'info' drops the weight branch (Table VI)
        direction="bottom_up",     # [choice] or 'top_down' (Table VI)
        progressive=False,         # [choice] True carries the MSCA query: Q_{i+1} = G'_i
        use_text=True,             # [choice] False regresses from concat(g_i) (Table VI)
        learn_tau=False,           # [choice] learn log tau (init and clip at ln 100)
        pretrained=True,           # ImageNet ResNet50 + CLIP text features; False: random (offline)
        resnet_source="timm/resnet50.a1_in1k",       # hub id, directory or .safetensors file
        clip_source="openai/clip-vit-base-patch32",  # hub id or directory in the hub layout
    ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.dtype = "float32"       # compute dtype: 'float32' or 'bfloat16' (parameters stay float32)
    config.model = model_config()
    if arg == "tiny":
        config.model.pretrained = False
    return config
