"""CLIP's text transformer in Flax NNX, parameter-compatible with transformers' FlaxCLIPTextModel.

transformers 5 removed its Flax models, so this is our own module. Its parameter tree is the one
FlaxCLIPModel saves under `text_model` and `text_projection` (`embeddings/token_embedding/embedding`,
`encoder/layers/<i>/self_attn/q_proj/kernel`, ...), so a `flax_model.msgpack` loads by name; the
PyTorch safetensors loader in `bpclip_jax.weights` maps torch names onto the same tree.
Architecture: token + position embeddings, pre-LN layers with QuickGELU and a causal mask, final
LayerNorm, the hidden state at the end-of-text token, then the bias-free text projection.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """The fields of a hub `config.json` (CLIPConfig's `text_config`, or a CLIPTextConfig) we use."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    projection_dim: int = 512
    eos_token_id: int = 2

    @classmethod
    def from_json(cls, path: str | Path) -> CLIPTextConfig:
        raw = json.loads(Path(path).read_text())
        text = dict(raw.get("text_config") or raw)
        if "projection_dim" in raw:  # CLIPModel projects with its top-level projection_dim
            text["projection_dim"] = raw["projection_dim"]
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in text.items() if k in fields})


_ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
}


class _Embeddings(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, rngs: nnx.Rngs):
        self.token_embedding = nnx.Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs)
        self.position_embedding = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, rngs=rngs)

    def __call__(self, ids):
        return self.token_embedding(ids) + self.position_embedding(jnp.arange(ids.shape[-1]))


class _SelfAttention(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, rngs: nnx.Rngs):
        w = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nnx.Linear(w, w, rngs=rngs) for _ in range(4))

    def __call__(self, x):
        b, n, w = x.shape
        split = lambda t: t.reshape(b, n, self.heads, w // self.heads)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(w // self.heads)
        causal = jnp.tril(jnp.ones((n, n), bool))
        weights = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=-1)
        return self.out_proj(jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, w))


class _MLP(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, rngs: nnx.Rngs):
        self.act = _ACTIVATIONS[cfg.hidden_act]
        self.fc1 = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, rngs=rngs)
        self.fc2 = nnx.Linear(cfg.intermediate_size, cfg.hidden_size, rngs=rngs)

    def __call__(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _EncoderLayer(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, rngs: nnx.Rngs):
        norm = dict(epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.self_attn = _SelfAttention(cfg, rngs)
        self.layer_norm1 = nnx.LayerNorm(cfg.hidden_size, **norm)
        self.mlp = _MLP(cfg, rngs)
        self.layer_norm2 = nnx.LayerNorm(cfg.hidden_size, **norm)

    def __call__(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Encoder(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, rngs: nnx.Rngs):
        self.layers = nnx.List([_EncoderLayer(cfg, rngs) for _ in range(cfg.num_hidden_layers)])

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class _TextTransformer(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, rngs: nnx.Rngs):
        self.embeddings = _Embeddings(cfg, rngs)
        self.encoder = _Encoder(cfg, rngs)
        self.final_layer_norm = nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, rngs=rngs)

    def __call__(self, ids):
        return self.final_layer_norm(self.encoder(self.embeddings(ids)))


class CLIPTextModel(nnx.Module):
    """`__call__(input_ids [N,T] int32)` -> projected text features `[N, projection_dim]`, unnormalized.

    Pooling follows transformers: at argmax(ids) for configs with the legacy `eos_token_id == 2`
    (OpenAI's checkpoints, whose end-of-text id is the largest), else at the first `eos_token_id`.
    """

    def __init__(self, cfg: CLIPTextConfig, *, rngs: nnx.Rngs):
        self.eos_token_id = cfg.eos_token_id
        self.text_model = _TextTransformer(cfg, rngs)
        self.text_projection = nnx.Linear(cfg.hidden_size, cfg.projection_dim, use_bias=False,
                                          rngs=rngs)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        hidden = self.text_model(input_ids)
        if self.eos_token_id == 2:
            eot = jnp.argmax(input_ids, axis=-1)
        else:
            eot = jnp.argmax(input_ids == self.eos_token_id, axis=-1)
        pooled = jnp.take_along_axis(hidden, eot[:, None, None], axis=1)[:, 0]
        return self.text_projection(pooled)
