"""The offline stand-ins for CLIP's prompt features: their geometry under tau = 100."""

import numpy as np
import pytest

from bpclip_jax.models.bpclip import CLIP_LOGIT_SCALE
from bpclip_jax.text import PROMPTS, clip_like_features, random_features, stand_in_features


def test_stand_ins_are_unit_vectors_with_the_stated_pairwise_cosine():
    for cosine in (0.85, 0.995):
        t = random_features(len(PROMPTS), 512, seed=3, cosine=cosine)
        assert t.shape == (40, 512) and t.dtype == np.float32
        t = t.astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-6)
        gram = t @ t.T
        np.testing.assert_allclose(gram[~np.eye(40, dtype=bool)], cosine, atol=1e-6)
    np.testing.assert_array_equal(random_features(seed=1), random_features(seed=1))
    assert not np.allclose(random_features(seed=1), random_features(seed=2))
    with pytest.raises(ValueError, match="cosine"):
        random_features(cosine=1.0)


def test_no_image_feature_can_make_uniform_0995_stand_ins_softmax_one_hot():
    """Uniform stand-ins at cosine 0.995 keep tau * |t_k - t_j| at 10 logits, so that even an image
    feature pointing straight at one prompt (away from the prompts' mean) gets a graded softmax;
    stand-ins with CLIP's pairwise cosines let it reach probability ~1."""
    t = random_features().astype(np.float64)
    gaps = CLIP_LOGIT_SCALE * np.linalg.norm(t[:, None] - t[None], axis=-1)
    assert gaps.max() == pytest.approx(10.0, abs=1e-3)
    x = t - t.mean(axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    logits = CLIP_LOGIT_SCALE * x @ t.T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    own = probs[np.arange(len(t)), np.arange(len(t))]
    assert np.all(own == probs.max(axis=1)) and own.max() < 0.98


def test_clip_like_stand_ins_have_clips_geometry():
    """A shared template direction, six dimension clusters and a good/bad axis: pairwise cosines
    spread over about 0.67-0.96, synonyms closer than antonyms, one dimension's prompts closer
    than two dimensions'; and under tau = 100 some image feature makes the softmax one-hot."""
    t = clip_like_features(seed=3).astype(np.float64)
    assert t.shape == (40, 512)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-6)
    gram = t @ t.T
    pairs = ~np.eye(40, dtype=bool)
    assert 0.62 < gram[pairs].min() < 0.72 and 0.93 < gram[pairs].max() < 0.98
    assert np.std(gram[pairs]) > 0.05  # spread, not one cosine
    same_dim = np.array([[a.dimension == b.dimension for b in PROMPTS] for a in PROMPTS]) & pairs
    same_sign = np.array([[a.positive == b.positive for b in PROMPTS] for a in PROMPTS]) & pairs
    assert gram[same_dim & same_sign].mean() > gram[same_dim & ~same_sign].mean() + 0.1
    assert gram[same_dim & ~same_sign].mean() > gram[~same_dim & ~same_sign].mean() + 0.05
    assert gram[~same_dim & same_sign].mean() > gram[~same_dim & ~same_sign].mean() + 0.05
    x = t[0] - t.mean(axis=0)
    logits = CLIP_LOGIT_SCALE * (t @ (x / np.linalg.norm(x)))
    assert np.exp(logits.max() - np.logaddexp.reduce(logits)) > 0.99
    np.testing.assert_array_equal(clip_like_features(seed=1), clip_like_features(seed=1))
    assert not np.allclose(clip_like_features(seed=1), clip_like_features(seed=2))


def test_stand_in_kinds_are_named_in_the_config():
    np.testing.assert_array_equal(stand_in_features("clip_like", seed=4), clip_like_features(seed=4))
    np.testing.assert_array_equal(stand_in_features("uniform:0.85", seed=4),
                                  random_features(seed=4, cosine=0.85))
    for bad in ("uniform", "uniform:1.5", "clip", "uniform:x"):
        with pytest.raises(ValueError, match="model.stand_in_text"):
            stand_in_features(bad)
