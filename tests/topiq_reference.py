"""A PyTorch reference of TOPIQ's layers and of BPCLIP's head, written for the tests from the
published descriptions (TOPIQ, Chen et al., TIP 2024: pre-LN transformer layers on torch's
nn.MultiheadAttention, gated local pooling, a bicubic-resized positional map; BPCLIP, Eq. 1-9), and
loaders that copy a Flax module's values into it. Tensors are torch's layouts: maps NCHW, tokens
sequence-first [L,B,D] as nn.MultiheadAttention takes them. Eval mode only (dropout off).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GATE_WIDTH = 64


def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x, np.float32))


def _gelu(x):
    return F.gelu(x)  # exact (erf)


class EncoderLayer(nn.Module):
    """TOPIQ's self-attention layer: x += attn(LN1 x); x += FFN(LN2 x). forward -> (x, head-mean map)."""

    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=0.1)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.linear1, self.linear2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)

    def forward(self, x):
        h = self.norm1(x)
        attended, weights = self.attn(h, h, h)
        x = x + attended
        return x + self.linear2(_gelu(self.linear1(self.norm2(x)))), weights


class DecoderLayer(nn.Module):
    """TOPIQ's cross-attention layer: q += attn(LN1 q, LN2 m, LN2 m); q += FFN(LN3 q)."""

    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=0.1)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.linear1, self.linear2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)

    def forward(self, query, memory):
        memory = self.norm2(memory)
        attended, weights = self.attn(self.norm1(query), memory, memory)
        query = query + attended
        return query + self.linear2(_gelu(self.linear1(self.norm3(query)))), weights


class GatedPooling(nn.Module):
    """TOPIQ's gated local pooling of one level, FR (gate on |Fd - Fr|, features Fd, Fr, |Fd - Fr|)
    or NR (1x1 split conv, GELU(a) * gate(b)), then adaptive average pooling, 1x1 conv, GELU.
    forward(dist, ref, out_hw) -> (tokens [h*w,B,D], gate [B,H,W])."""

    def __init__(self, channels: int, dim: int, full_reference: bool):
        super().__init__()
        self.full_reference = full_reference
        self.gate = nn.Sequential(
            nn.Conv2d(channels, GATE_WIDTH, 1), nn.GELU(),
            nn.Conv2d(GATE_WIDTH, GATE_WIDTH, 3, padding=1), nn.GELU(),
            nn.Conv2d(GATE_WIDTH, 1, 3, padding=1), nn.Sigmoid())
        self.split = None if full_reference else nn.Conv2d(channels, 2 * channels, 1)
        self.reduce = nn.Conv2d(3 * channels if full_reference else channels, dim, 1)

    def forward(self, dist, ref, out_hw):
        if self.full_reference:
            diff = torch.sqrt((dist - ref) ** 2 + 1e-12)
            gate = self.gate(diff)
            h = torch.cat([dist, ref, diff], dim=1) * gate
        else:
            a, b = self.split(dist).chunk(2, dim=1)
            gate = self.gate(b)
            h = _gelu(a) * gate
        h = _gelu(self.reduce(F.adaptive_avg_pool2d(h, out_hw)))
        return h.flatten(2).permute(2, 0, 1), gate[:, 0]


def positional_map(rows: np.ndarray, cols: np.ndarray, h: int, w: int) -> torch.Tensor:
    """TOPIQ's positional map: h_emb [1,D/2,G,1] repeated along columns, w_emb [1,D/2,1,G] along
    rows, concatenated on channels, bicubic-resized to h x w. rows, cols: [G, D/2]. -> [h*w, 1, D]."""
    h_emb, w_emb = _t(rows).T[None, :, :, None], _t(cols).T[None, :, None, :]
    grid = torch.cat([h_emb.repeat(1, 1, 1, w_emb.shape[3]), w_emb.repeat(1, 1, h_emb.shape[2], 1)], 1)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    return grid.flatten(2).permute(2, 0, 1)


class Head(nn.Module):
    """[LN], Linear, GELU, Linear: BPCLIP's MLP_f, MLP_w, MLP_x, MLP_reg."""

    def __init__(self, features: int, hidden: int, out: int, norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(features) if norm else nn.Identity()
        self.fc1, self.fc2 = nn.Linear(features, hidden), nn.Linear(hidden, out)

    def forward(self, x):
        return self.fc2(_gelu(self.fc1(self.norm(x))))


# Loaders: Flax values -> the modules above. Linear kernels are [in, out] in Flax, [out, in] in torch;
# conv kernels HWIO in Flax, OIHW in torch; q, k, v are one packed in_proj [3D, D] in torch.

def _set(param: nn.Parameter, value) -> None:
    with torch.no_grad():
        param.copy_(_t(value))


def load_linear(dst: nn.Linear, src) -> None:
    _set(dst.weight, np.asarray(src.kernel[...]).T)
    _set(dst.bias, src.bias[...])


def load_conv(dst: nn.Conv2d, src) -> None:
    _set(dst.weight, np.asarray(src.kernel[...]).transpose(3, 2, 0, 1))
    _set(dst.bias, src.bias[...])


def load_norm(dst: nn.LayerNorm, src) -> None:
    _set(dst.weight, src.scale[...])
    _set(dst.bias, src.bias[...])


def load_attention(dst: nn.MultiheadAttention, src) -> None:
    parts = (src.query, src.key, src.value)
    _set(dst.in_proj_weight, np.concatenate([np.asarray(p.kernel[...]).T for p in parts]))
    _set(dst.in_proj_bias, np.concatenate([np.asarray(p.bias[...]) for p in parts]))
    load_linear(dst.out_proj, src.out)


def load_layer(dst: EncoderLayer | DecoderLayer, src) -> None:
    """A Flax TransformerLayer (self or cross) -> its torch layer."""
    load_attention(dst.attn, src.attention)
    load_linear(dst.linear1, src.ffn.linear1)
    load_linear(dst.linear2, src.ffn.linear2)
    load_norm(dst.norm1, src.norm_query)
    if isinstance(dst, DecoderLayer):
        load_norm(dst.norm2, src.norm_memory)
        load_norm(dst.norm3, src.norm_ffn)
    else:
        load_norm(dst.norm2, src.norm_ffn)


def load_glp(dst: GatedPooling, src) -> None:
    for i, conv in zip((0, 2, 4), (src.phi.conv1, src.phi.conv2, src.phi.conv3)):
        load_conv(dst.gate[i], conv)
    if dst.split is not None:
        load_conv(dst.split, src.split)
    load_conv(dst.reduce, src.reduce)


def load_head(dst: Head, src) -> None:
    if src.norm is not None:
        load_norm(dst.norm, src.norm)
    load_linear(dst.fc1, src.fc1)
    load_linear(dst.fc2, src.fc2)


def layer_pair(src, dim: int, heads: int, ffn: int, *, cross: bool):
    """A torch layer in eval mode holding the values of the Flax TransformerLayer `src`."""
    layer = (DecoderLayer if cross else EncoderLayer)(dim, heads, ffn)
    load_layer(layer, src)
    return layer.eval()


def perturb(module, seed: int, scale: float = 0.2) -> None:
    """Moves every bias and LayerNorm scale of a Flax module away from its init (0 or 1), so that a
    dropped, swapped or misplaced one changes the output. (nnx.state holds the module's own
    variables, so setting their values changes the module.)"""
    from flax import nnx

    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        if path[-1] in ("bias", "scale"):
            value = np.asarray(var.get_value())
            var.set_value(value + scale * rng.standard_normal(value.shape).astype(value.dtype))


def relative_error(got, expected) -> float:
    """max |got - expected| / max |expected|: the error on the output's own scale."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def bpclip_forward(model, dist_levels, ref_levels=None) -> tuple[torch.Tensor, dict]:
    """BPCLIP (Eq. 1-9) downstream of the backbone, in torch, with the values and switches of the
    Flax `model`. dist_levels, ref_levels: the five backbone levels, NHWC numpy.
    Returns (score [B], aux: 'gates' (5 x [B,H_i,W_i]), 'token_weights' [B,4,L], and with text
    'similarity', 'probs' [B,4,P]).

    Levels are 0-based here (G[0] is the paper's G_1). Bottom-up pair i: query G[i], key/value
    G[i+1] (Eq. 4), weight branch SA(G[i]) (Eq. 5). Top-down pair at key level i: query G[i+1],
    key/value G[i], weight branch SA(G[i+1]); layer j serves key level 3 - j. `progressive` carries
    each pair's output as the next pair's query.
    """
    dim = model.position.rows.shape[1] * 2
    heads, ffn = model.msca[0].attention.heads, model.msca[0].ffn.linear1.kernel.shape[1]
    grid = dist_levels[-1].shape[1:3]
    position = positional_map(model.position.rows[...], model.position.cols[...], *grid)
    tokens, gates = [], []
    for i, d in enumerate(dist_levels):
        glp = GatedPooling(d.shape[-1], dim, model.full_reference)
        load_glp(glp, model.glp[i])
        r = None if ref_levels is None else _t(ref_levels[i]).permute(0, 3, 1, 2)
        t, g = glp.eval()(_t(d).permute(0, 3, 1, 2), r, grid)
        tokens.append(t + position)
        gates.append(g)
    cross = [layer_pair(m, dim, heads, ffn, cross=True) for m in model.msca]
    selfs = None if model.sa is None else [layer_pair(m, dim, heads, ffn, cross=False) for m in model.sa]
    info, weight = [None] * 4, [None] * 4
    carried = None
    for j in range(4):
        if model.direction == "bottom_up":
            level, query_level, kv_level = j, j, j + 1
        else:
            level, query_level, kv_level = 3 - j, 4 - j, 3 - j
        query = carried if (model.progressive and carried is not None) else tokens[query_level]
        info[level] = carried = cross[j](query, tokens[kv_level])[0]
        if selfs is not None:
            weight[level] = selfs[j](tokens[query_level])[0]
    heads_ = {}
    for name in ("mlp_f", "mlp_w", "mlp_x", "mlp_reg"):
        src = getattr(model, name)
        if src is not None:
            heads_[name] = Head(src.fc1.kernel.shape[0], src.fc1.kernel.shape[1],
                                src.fc2.kernel.shape[1], src.norm is not None)
            load_head(heads_[name], src)
    f = torch.stack([heads_["mlp_f"](x) for x in info], dim=0)                  # [4,L,B,D]
    if selfs is None:
        w = torch.ones(f.shape[:-1] + (1,))
    else:
        w = torch.sigmoid(torch.stack([heads_["mlp_w"](x) for x in weight], dim=0))
    g = (f * w).sum(dim=1) / (w.sum(dim=1) + 1e-8)                             # [4,B,D]  Eq. 6
    aux = {"gates": gates, "token_weights": w[..., 0].permute(2, 0, 1)}
    if model.use_text:
        x = heads_["mlp_x"](g)                                                 # Eq. 7
        text = _t(model.text_features[...])
        similarity = F.normalize(x, dim=-1) @ F.normalize(text, dim=-1).T        # Eq. 8
        probs = torch.softmax(float(model.tau()) * similarity, dim=-1)
        aux.update(similarity=similarity.permute(1, 0, 2), probs=probs.permute(1, 0, 2))
        # Eq. 9 as printed regresses on the cosines; Fig. 1's caption on their softmax
        features = aux["similarity" if model.text_head == "cosine" else "probs"].flatten(1)
    else:
        features = g.permute(1, 0, 2).flatten(1)
    return heads_["mlp_reg"](features)[:, 0], aux                              # Eq. 9
