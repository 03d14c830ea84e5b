"""The offline stand-ins for CLIP's prompt features: their geometry under tau = 100."""

import numpy as np
import pytest

from bpclip_jax.models.bpclip import CLIP_LOGIT_SCALE
from bpclip_jax.text import PROMPTS, random_features


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


def test_no_image_feature_can_make_the_stand_ins_softmax_one_hot():
    """The default stand-ins keep tau * |t_k - t_j| at 10 logits, so that even an image feature
    pointing straight at one prompt (away from the prompts' mean) gets a graded softmax; stand-ins
    with CLIP's pairwise cosines (~0.85) let it reach probability ~1 and the demo collapsed."""
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
