"""The notebook API: inputs of every kind, batching invariance, the protocol's sizes by default,
explanations and their figure, export round trip, bad input, and the bounded number of compiles
for mixed sizes when asked for."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from bpclip_jax import api, evaluate, predict
from bpclip_jax.build import create_model
from bpclip_jax.errors import UserError
from bpclip_jax.explain import probability_note, scale_phrase
from bpclip_jax.inputs import SizePolicy, load_pixels
from bpclip_jax.text import DIMENSIONS, PROMPTS
from bpclip_jax.weights import WeightLoadError
from configs import base
from tests import data_fixtures


def _scorer(full_reference: bool, dataset: str | None = None, **kwargs) -> api.Scorer:
    config = base.get_config("tiny")
    config.model.full_reference = full_reference
    model = create_model(config.model, seed=1)
    dataset = dataset or ("kadid10k" if full_reference else "koniq10k")
    return api.Scorer(model, config, dataset=dataset, **kwargs)


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_same_image_scores_the_same_in_any_batch(nr):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(5)]
    alone = nr(images[2])
    together = nr(images)
    assert together.shape == (5,) and together[2] == pytest.approx(alone, abs=1e-5)
    assert nr(images[::-1])[2] == pytest.approx(alone, abs=1e-5)


@pytest.mark.slow
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
    assert e.ref is None and e.headline() == f"{e.score:.3g} on KonIQ-10k's 1-5 scale, higher is better"
    out = nr.save_explanation(tmp_path / "why.png", rgb)
    assert Image.open(out).size[0] > 300


@pytest.mark.slow
def test_what_the_probabilities_are_is_said_under_each_head(nr, photo):
    """The cosine head's probabilities are a display (softmax at CLIP's 100 of the cosines the score
    reads); a softmax head's are what it reads; stand-in text features are named as such."""
    _, rgb = photo
    e = nr.explain(rgb)
    assert e.text_head == "cosine" and e.tau == pytest.approx(100.0) and e.stand_in
    model = nnx.merge(nr.graphdef, nr.state)
    expected = jax.nn.softmax(100.0 * model(jnp.asarray(rgb[None] / np.float32(255)))[1]["similarity"], -1)
    np.testing.assert_allclose(e.probs, expected[0], rtol=1e-4, atol=1e-7)
    note = e.probability_note()
    assert note.startswith("softmax of the image-to-prompt cosines at CLIP's logit scale 100, for display")
    assert "STAND-IN text features" in note
    assert probability_note("softmax_learned", 14.29, stand_in=False) == (
        "the model's prompt softmax at tau 14.3, which the score regresses on")


@pytest.mark.slow
def test_explanation_of_a_full_reference_model_shows_its_reference(fr):
    rng = np.random.default_rng(2)
    dist, ref = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    e = fr.explain(dist, ref=ref)
    np.testing.assert_array_equal(e.ref, ref / np.float32(255))
    assert e.score_normalized == pytest.approx(fr(dist, ref=ref, normalized=True), abs=1e-6)


def test_scale_phrases_give_range_and_direction():
    assert scale_phrase("kadid10k") == "KADID-10k's 1-5 scale, higher is better"
    assert scale_phrase("live") == "LIVE's 0-100 DMOS scale, lower is better"
    assert scale_phrase("spaq") == "SPAQ's 0-100 scale, higher is better"


@pytest.mark.slow
def test_export_round_trip_gives_identical_scores(fr, tmp_path):
    rng = np.random.default_rng(1)
    dist, ref = (rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(2))
    path = fr.export(tmp_path / "model")
    loaded = api.Scorer.from_pretrained(path, size_step=32)
    assert loaded.full_reference and loaded.dataset == "kadid10k"
    assert loaded(dist, ref=ref) == fr(dist, ref=ref)
    assert (path / "README.md").is_file()


@pytest.mark.slow
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
    with pytest.raises(UserError, match="meta.json is missing"):
        api.Scorer.from_pretrained(path)
    with pytest.raises(UserError, match="no such directory, and not a hub repo id"):
        api.Scorer.from_pretrained(tmp_path / "nothing")


@pytest.mark.slow
def test_bad_inputs_get_clear_messages(fr, nr, tmp_path):
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(api.InputError, match="full-reference model; give its reference"):
        fr(image)
    with pytest.raises(api.InputError, match="no-reference model; it takes no reference"):
        nr(image, ref=image)
    with pytest.raises(api.InputError, match="is 64x64 but its reference is 65x64"):
        fr(image, ref=np.zeros((64, 65, 3), np.uint8))
    with pytest.raises(api.InputError, match=r"must be finite and in \[0, 1\]"):
        nr(np.full((64, 64, 3), 2.0, np.float32))
    with pytest.raises(api.InputError, match="nothing.png: no such file"):
        nr(tmp_path / "nothing.png")
    with pytest.raises(api.InputError, match="no image files found"):
        api.list_images(str(tmp_path))


@pytest.mark.slow
def test_predict_files_reports_failed_rows_and_scores_the_rest(nr, tmp_path):
    for i in range(3):
        data_fixtures.image(tmp_path / f"ok{i}.png", i, size=(64, 64))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    rows = predict.predict_files(nr, api.list_images(str(tmp_path)))
    failed = [r for r in rows if r["error"]]
    assert len(rows) == 4 and len(failed) == 1 and "broken.png" in failed[0]["error"]
    assert all(np.isfinite(r["score"]) and r["sharpness"] in DIMENSIONS["sharpness"]
               for r in rows if not r["error"])
    assert "FAILED" in predict.format_table(rows)


@pytest.mark.slow
def test_mixed_sizes_compile_a_bounded_number_of_shapes_with_size_step():
    scorer = _scorer(False, size_step=32)
    sizes = [(h, w) for h in (40, 44, 47, 52, 58, 60) for w in (41, 62)]
    images = [np.full((h, w, 3), 128, np.uint8) for h, w in sizes]
    scores = scorer(images)
    assert len(set(sizes)) == 12 and np.all(np.isfinite(scores))
    targets = {scorer.sizes.target(h, w) for h, w in sizes}
    assert targets == {(32, 32), (32, 64), (64, 32), (64, 64)}
    assert scorer.compiled_shapes() == len(targets) == 4


def test_default_sizes_are_the_protocols():
    """Every benchmark image keeps its size unless the model is a SPAQ model (shorter side 448)."""
    for dataset in ("clive", "live", "koniq10k", "kadid10k", "tid2013", "csiq"):
        policy = SizePolicy.for_dataset(dataset)
        for size in ((500, 500), (512, 768), (505, 634), (384, 512), (3000, 4000)):
            assert policy.target(*size) == size, (dataset, size)
    spaq = SizePolicy.for_dataset("spaq")
    assert spaq.target(3000, 4000) == (448, 597) and spaq.target(448, 448) == (448, 448)
    assert SizePolicy.for_dataset("spaq", short_side=0).target(3000, 4000) == (3000, 4000)
    assert SizePolicy.for_dataset("clive", size_step=64).target(500, 500) == (512, 512)
    with pytest.raises(UserError, match="short_side must be 'auto' or a number"):
        SizePolicy.for_dataset("spaq", short_side="big")


def test_spaq_photos_are_resized_as_the_spaq_reader_resizes_them(tmp_path):
    from data_pipelines.nr_sets import resize_short_side

    rgb = data_fixtures.image(tmp_path / "photo.jpg", 3, size=(900, 600), fmt="JPEG")
    (copy,) = resize_short_side([tmp_path / "photo.jpg"], tmp_path / "448", 448)
    ours = SizePolicy.for_dataset("spaq").apply(load_pixels(tmp_path / "photo.jpg"))
    assert rgb.shape == (900, 600, 3) and ours.shape == (672, 448, 3)
    np.testing.assert_array_equal(ours, np.asarray(Image.open(copy)) / np.float32(255))


@pytest.mark.slow
def test_scorer_gives_the_score_of_the_evaluation_protocol(tmp_path):
    """A CLIVE model scores a 40x56 image as `--mode eval` does: at its own size (the old default
    rounded it to 64x64, another score)."""
    from flax import nnx

    from data_pipelines.records import Record

    data_fixtures.image(tmp_path / "odd.png", 4, size=(40, 56))
    config = base.get_config("tiny")
    config.model.full_reference = False
    model = create_model(config.model, seed=1)
    record = Record(dist=str(tmp_path / "odd.png"), ref=None, mos=50.0, score=0.5, content="odd",
                    dataset="clive")
    protocol = evaluate.predict(*nnx.split(model, nnx.Param, ...), [record])
    scorer = api.Scorer(model, config, dataset="clive")
    assert scorer(tmp_path / "odd.png", normalized=True) == pytest.approx(float(protocol[0]), abs=1e-6)


def test_from_workdir_without_config_json_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="holds no config.json: it is not a training run's workdir"):
        api.Scorer.from_workdir(tmp_path)
