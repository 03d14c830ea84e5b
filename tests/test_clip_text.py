"""CLIP text tower parity with transformers' PyTorch CLIPModel, through encode_text."""

import numpy as np
import pytest

from bpclip_jax import text
from bpclip_jax.weights import WeightLoadError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.clip_fixtures import save_tiny_clip  # noqa: E402


def _torch_features(model, tokenizer, prompts):
    batch = tokenizer([p.text for p in prompts], padding="max_length", max_length=77,
                      return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(input_ids=batch["input_ids"],
                                      attention_mask=batch["attention_mask"])
    features = getattr(out, "pooler_output", out).numpy()
    return features / np.linalg.norm(features, axis=-1, keepdims=True)


@pytest.mark.parametrize("eos_token_id", [2, None], ids=["legacy-argmax", "first-eos"])
def test_encode_text_matches_transformers(tmp_path, eos_token_id):
    model, tokenizer = save_tiny_clip(tmp_path, eos_token_id)
    assert (tmp_path / "model.safetensors").is_file()
    expected = _torch_features(model, tokenizer, text.PROMPTS)
    got = text.encode_text(text.PROMPTS, str(tmp_path))
    assert got.shape == (40, 24)
    err = np.abs(got - expected).max()
    print(f"CLIP text parity (safetensors, eos={eos_token_id}): max abs error {err:.2e}")
    assert err <= 1e-5


def _flax_clip_tree(state):
    """FlaxCLIPModel's parameter tree, written out from the torch names independently of our loader."""
    tree = {"logit_scale": np.asarray(2.6592, np.float32),
            "vision_model": {"post_layernorm": {"scale": np.ones(32, np.float32)}},
            "visual_projection": {"kernel": np.zeros((32, 24), np.float32)}}
    for key, value in state.items():
        if not key.startswith(("text_model.", "text_projection.")) or key.endswith("position_ids"):
            continue
        *parts, leaf = key.split(".")
        value = value.numpy()
        if parts[-1] in ("token_embedding", "position_embedding"):
            leaf = "embedding"
        elif "layer_norm" in parts[-1]:
            leaf = {"weight": "scale", "bias": "bias"}[leaf]
        elif leaf == "weight":
            leaf, value = "kernel", value.T
        node = tree
        for part in parts:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def test_msgpack_route_matches_transformers(tmp_path):
    from flax import serialization

    model, tokenizer = save_tiny_clip(tmp_path, 2)
    tree = _flax_clip_tree(model.state_dict())
    assert "kernel" in tree["text_model"]["encoder"]["layers"]["0"]["self_attn"]["q_proj"]
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(tree))
    got = text.encode_text(text.PROMPTS[:5], str(tmp_path))
    err = np.abs(got - _torch_features(model, tokenizer, text.PROMPTS[:5])).max()
    print(f"CLIP text parity (msgpack): max abs error {err:.2e}")
    assert err <= 1e-5

    del tree["text_model"]["final_layer_norm"]["bias"]
    (tmp_path / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(tree))
    with pytest.raises(WeightLoadError, match="missing .*text_model/final_layer_norm/bias"):
        text.encode_text(text.PROMPTS[:1], str(tmp_path))


def test_prompt_features_are_cached(tmp_path, monkeypatch):
    save_tiny_clip(tmp_path, 2)
    first = text.prompt_features(str(tmp_path))
    calls = []
    monkeypatch.setattr(text, "encode_text", lambda *a, **k: calls.append(a))
    np.testing.assert_array_equal(text.prompt_features(str(tmp_path)), first)
    assert not calls, "the second call must read the cache, not run the text tower"


def test_offline_hub_error_says_what_to_download():
    with pytest.raises(FileNotFoundError, match="Download https://huggingface.co/openai/clip-vit-base-patch32/resolve/main/config.json"):
        text.encode_text(["a photo."], "openai/clip-vit-base-patch32")
