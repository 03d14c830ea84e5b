"""The notebook API: inputs of every kind, batching invariance, explanations, export round trip,
bad input, and the bounded number of compiles for mixed sizes."""

import numpy as np
import pytest
from PIL import Image

from bpclip_jax import api
from bpclip_jax.build import create_model
from bpclip_jax.text import DIMENSIONS, PROMPTS
from bpclip_jax.weights import WeightLoadError
from configs import base
from tests import data_fixtures


def _scorer(full_reference: bool, **kwargs) -> api.Scorer:
    config = base.get_config("tiny")
    config.model.full_reference = full_reference
    model = create_model(config.model, seed=1)
    return api.Scorer(model, config, dataset="kadid10k" if full_reference else "koniq10k", **kwargs)


@pytest.fixture(scope="module")
def nr():
    return _scorer(False, size_step=32)


@pytest.fixture(scope="module")
def fr():
    return _scorer(True, size_step=32)


@pytest.fixture
def photo(tmp_path):
    rgb = data_fixtures.image(tmp_path / "rgb.png", 0, size=(64, 64))
    return tmp_path, rgb


def test_every_input_kind_scores_and_agrees(nr, photo):
    tmp, rgb = photo
    Image.fromarray(rgb).convert("L").save(tmp / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp / "sixteen.png")
    by_path = nr(tmp / "rgb.png")
    assert nr(Image.fromarray(rgb)) == pytest.approx(by_path, abs=1e-6)
    assert nr(rgb) == pytest.approx(by_path, abs=1e-6)
    assert nr(rgb.astype(np.float32) / 255) == pytest.approx(by_path, abs=1e-6)
    assert nr(str(tmp / "rgba.png")) == pytest.approx(by_path, abs=1e-6)  # alpha dropped
    for name in ("gray.png", "sixteen.png"):
        assert np.isfinite(nr(tmp / name))
    assert nr(tmp / "gray.png") == pytest.approx(nr(np.asarray(Image.open(tmp / "gray.png"))), abs=1e-6)
    normalized = nr(rgb, normalized=True)
    assert by_path == pytest.approx(1 + 4 * normalized, abs=1e-5)  # KonIQ's MOS scale 1..5


def test_the_same_image_scores_the_same_in_any_batch(nr):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(5)]
    alone = nr(images[2])
    together = nr(images)
    assert together.shape == (5,) and together[2] == pytest.approx(alone, abs=1e-5)
    assert nr(images[::-1])[2] == pytest.approx(alone, abs=1e-5)


def test_explanation_sums_to_one_and_follows_the_prompt_order(nr, photo, tmp_path):
    tmp, rgb = photo
    e = nr.explain(rgb)
    assert e.probs.shape == (4, len(PROMPTS))
    np.testing.assert_allclose(e.probs.sum(axis=1), 1.0, rtol=1e-5)
    assert list(e.dimensions) == list(DIMENSIONS)
    for dim, ranked in e.dimensions.items():
        assert sorted(a for a, _ in ranked) == sorted(DIMENSIONS[dim])
        assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)
        first = [i for i, p in enumerate(PROMPTS) if p.dimension == dim]
        assert ranked[0][1] == pytest.approx(max(e.probs.mean(0)[first]), rel=1e-6)
    assert e.weight_maps.shape == (4, 2, 2) and e.score == pytest.approx(nr(rgb), abs=1e-5)
    out = nr.save_explanation(tmp_path / "why.png", rgb)
    assert Image.open(out).size[0] > 300


def test_export_round_trip_gives_identical_scores(fr, tmp_path):
    rng = np.random.default_rng(1)
    dist, ref = (rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(2))
    path = fr.export(tmp_path / "model")
    loaded = api.Scorer.from_pretrained(path, size_step=32)
    assert loaded.full_reference and loaded.dataset == "kadid10k"
    assert loaded(dist, ref=ref) == fr(dist, ref=ref)


def test_from_pretrained_names_what_is_wrong(fr, tmp_path):
    from safetensors.numpy import load_file, save_file

    path = fr.export(tmp_path / "model")
    tensors = load_file(path / "model.safetensors")
    del tensors["mlp_reg/fc2/bias"]
    tensors["mlp_reg/fc1/kernel"] = tensors["mlp_reg/fc1/kernel"][:, :3]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(WeightLoadError, match=r"missing \(1\): mlp_reg/fc2/bias[\s\S]*mlp_reg/fc1/kernel"):
        api.Scorer.from_pretrained(path)
    (path / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="meta.json is missing"):
        api.Scorer.from_pretrained(path)


def test_bad_inputs_get_clear_messages(fr, nr, tmp_path):
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(api.InputError, match="full-reference model; give its reference"):
        fr(image)
    with pytest.raises(api.InputError, match="no-reference model; it takes no reference"):
        nr(image, ref=image)
    with pytest.raises(api.InputError, match="is 64x64 but its reference is 65x64"):
        fr(image, ref=np.zeros((64, 65, 3), np.uint8))
    with pytest.raises(api.InputError, match=r"must be in \[0, 1\]"):
        nr(np.full((64, 64, 3), 2.0, np.float32))
    with pytest.raises(api.InputError, match="nothing.png: no such file"):
        nr(tmp_path / "nothing.png")
    with pytest.raises(api.InputError, match="no image files found"):
        api.list_images(str(tmp_path))


def test_predict_files_reports_failed_rows_and_scores_the_rest(nr, tmp_path):
    for i in range(3):
        data_fixtures.image(tmp_path / f"ok{i}.png", i, size=(64, 64))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    rows = api.predict_files(nr, api.list_images(str(tmp_path)))
    failed = [r for r in rows if r["error"]]
    assert len(rows) == 4 and len(failed) == 1 and "broken.png" in failed[0]["error"]
    assert all(np.isfinite(r["score"]) and r["sharpness"] in DIMENSIONS["sharpness"]
               for r in rows if not r["error"])
    api.write_rows(tmp_path / "out.csv", rows)
    text = (tmp_path / "out.csv").read_text()
    assert "broken.png" in text and text.count("\n") == 5
    assert "FAILED" in api.format_table(rows)


def test_mixed_sizes_compile_a_bounded_number_of_shapes(tmp_path):
    scorer = _scorer(False, size_step=32)
    sizes = [(h, w) for h in (40, 44, 47, 52, 58, 60) for w in (41, 62)]
    images = [np.full((h, w, 3), 128, np.uint8) for h, w in sizes]
    scores = scorer(images)
    assert len(set(sizes)) == 12 and np.all(np.isfinite(scores))
    targets = {api.target_size(h, w, 32) for h, w in sizes}
    assert targets == {(32, 32), (32, 64), (64, 32), (64, 64)}
    assert scorer.compiled_shapes() == len(targets) == 4


def test_large_photos_follow_the_spaq_protocol():
    assert api.target_size(3000, 4000, 0) == (448, 597)
    assert api.target_size(3000, 4000, 64) == (448, 576)
    assert api.target_size(384, 512, 64) == (384, 512)  # KADID-sized images are untouched
    assert api.target_size(500, 500, 0) == (500, 500)
