"""TOPIQ's CFANet against pyiqa's own (pyiqa 0.1.16, installed as benchmarks/README.md installs the
peer): random pyiqa models, their state dicts saved as `.pth` files, converted by
`python -m bpclip_jax.convert`, loaded with `Scorer.from_pretrained` and scored as pyiqa scores
(FR and NR, several sizes, the test-time resize); the converter's strictness and one-line errors;
predict on an export folder; TOPIQ's recipe (configs/topiq_*.py, the Norm-in-Norm loss).

The pyiqa models get non-trivial BatchNorm and LayerNorm values (pyiqa's init leaves them at 0/1,
where a swapped scale and bias, or mean and variance, would go unseen), and scores around 0.5.

What costs time here is building, converting and compiling ResNet50-sized models, so it is done
once per module and shared: one pyiqa model and one `.pth` per kind (FR, NR), each export converted
once, one compile per model graph and input size (the swapped-tensor tests reuse the downscaling
test's model, input and pyiqa scores), the command line run in a process of its own only where that
process is what a test proves (a conversion, beside the in-process ones, and a one-line error).
"""

import csv
import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
import torch  # a test dependency (requirements-dev.txt)
from flax import nnx
from PIL import Image

# The peer, installed by the README's test command (.ci/run) as benchmarks/README.md installs it.
# Imported, not importorskip'ed: without it this module fails to collect and the run fails, so the
# parity test is never skipped silently.
from pyiqa.archs import topiq_arch

from bpclip_jax import api, cli, convert, run_config, train
from bpclip_jax.api import Scorer
from bpclip_jax.errors import UserError
from bpclip_jax.models.cfanet import bilinear_aa_matrix, resize_shorter_side, shorter_side_size

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-5  # max |ours - pyiqa| / max |pyiqa| over the batch
_forward = nnx.jit(lambda model, dist: model(dist)[0])  # one compile per model graph and shape


def _pyiqa_cfanet(full_reference: bool, seed: int):
    torch.manual_seed(seed)
    model = topiq_arch.CFANet(pretrained=False, backbone_pretrain=False, use_ref=full_reference)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
                m.running_mean.normal_(0.0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.8, 1.2, generator=gen)
                m.bias.normal_(0.0, 0.05, generator=gen)
        # Scores of a trained model's size: at random init they are small sums (~0.01) of the
        # head's O(1) terms, where float32 alone (pyiqa's float32 against its float64: 3.5e-7)
        # is 1e-5 of them; pyiqa's released models score in about 0..1.
        model.score_linear[6].bias.fill_(0.5)
    return model.eval()


def _state(model) -> dict:
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def peers():
    return {"fr": _pyiqa_cfanet(True, 0), "nr": _pyiqa_cfanet(False, 1)}


@pytest.fixture(scope="module")
def pth(peers, tmp_path_factory):
    """The peers' state dicts as .pth files: FR nested under 'params' as pyiqa's releases are, NR at
    the top level with a 'module.' prefix (both are read)."""
    folder = tmp_path_factory.mktemp("pth")
    torch.save({"params": peers["fr"].state_dict()}, folder / "fr.pth")
    torch.save({f"module.{k}": v for k, v in peers["nr"].state_dict().items()}, folder / "nr.pth")
    return folder


def _convert_command(*args) -> dict:
    """subprocess arguments of `python -m bpclip_jax.convert ARGS`, run from the repository."""
    return dict(args=[sys.executable, "-m", "bpclip_jax.convert", *map(str, args)], cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def exports(pth, tmp_path_factory):
    """Export folders: topiq_fr through the command line, topiq_nr and topiq_nr-flive (test_size
    384) through convert.convert, from the same NR checkpoint. The command runs in its own process
    while this one converts the NR folders (on two cores, its start-up costs no wall time)."""
    folder = tmp_path_factory.mktemp("exports")
    with tempfile.TemporaryFile("w+") as stderr, subprocess.Popen(
            **_convert_command("pyiqa", pth / "fr.pth", folder / "topiq_fr", "--metric", "topiq_fr"),
            stdout=subprocess.DEVNULL, stderr=stderr, text=True) as command:
        convert.convert(pth / "nr.pth", folder / "topiq_nr", "topiq_nr")
        convert.convert(pth / "nr.pth", folder / "topiq_nr-flive", "topiq_nr-flive")
        command.wait(timeout=300)
        stderr.seek(0)
        assert command.returncode == 0, stderr.read()
    return folder


@pytest.fixture(scope="module")
def scorers(exports):
    names = ("topiq_fr", "topiq_nr", "topiq_nr-flive")
    return {name: Scorer.from_pretrained(exports / name) for name in names}


def _images(size, seed, n=2) -> np.ndarray:
    """n noise images in [0,1], each darker and flatter than the one before (distinct scores)."""
    x = np.random.default_rng(seed).uniform(size=(n, *size, 3)).astype(np.float32)
    return x * (0.25 ** np.arange(n, dtype=np.float32))[:, None, None, None]


def _pyiqa_scores(model, dist, ref=None) -> np.ndarray:
    nchw = lambda x: None if x is None else torch.from_numpy(x).permute(0, 3, 1, 2)  # noqa: E731
    with torch.no_grad():
        return model(nchw(dist), nchw(ref)).numpy()[:, 0]


def _pyiqa_scores_at(model, dist, test_size: int) -> np.ndarray:
    """pyiqa's scores with its test-time resize to `test_size` (its test_img_size option)."""
    model.test_img_size = test_size
    try:
        return _pyiqa_scores(model, dist)
    finally:
        model.test_img_size = None


def _compare(got, expected, what: str) -> float:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    error = float(np.abs(got - expected).max() / np.abs(expected).max())
    print(f"{what}: pyiqa {expected}, ours {got}, max relative error {error:.2e}")
    # The images score apart by far more than the tolerance: the comparison is not of constants.
    assert np.ptp(expected) > 10 * TOL * np.abs(expected).max(), expected
    return error


# ------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("size", [(32, 32), (45, 71)], ids=["32x32", "45x71"])
def test_fr_scores_equal_pyiqa(peers, scorers, size):
    """45x71: the GLP pools of overlapping windows (sizes that do not divide)."""
    dist, ref = _images(size, 10), _images(size, 11)
    got = scorers["topiq_fr"](list(dist), list(ref))
    assert _compare(got, _pyiqa_scores(peers["fr"], dist, ref), f"FR {size}") < TOL


@pytest.mark.parametrize("size", [(16, 64), (45, 71)], ids=["16x64", "45x71"])
def test_nr_scores_equal_pyiqa(peers, scorers, size):
    """16x64: level 4 (1x4) is not larger than level 5 (1x2) along both sides, so pyiqa keeps its
    4 tokens unpooled, and so must we."""
    dist = _images(size, 12)
    got = scorers["topiq_nr"](list(dist))
    assert _compare(got, _pyiqa_scores(peers["nr"], dist), f"NR {size}") < TOL


def test_test_time_resize_equals_pyiqa(peers, scorers):
    """topiq_nr-flive's preprocessing: the shorter side to 384 (here up from 24x32 to 384x512)
    inside the model, as pyiqa's CFANet does with test_img_size=384."""
    dist = _images((24, 32), 13)
    expected = _pyiqa_scores_at(peers["nr"], dist, 384)
    got = scorers["topiq_nr-flive"](list(dist))
    assert _compare(got, expected, "NR-flive 24x32 -> 384x512") < TOL
    assert not np.allclose(expected, _pyiqa_scores(peers["nr"], dist), rtol=1e-3)  # the resize matters


DOWNSCALING = dataclasses.replace(convert.METRICS["topiq_nr-flive"], test_size=40)


@pytest.fixture(scope="module")
def nr_state(pth) -> dict:
    """The NR checkpoint as the converter reads it. Shared: a test that edits it edits a copy."""
    return convert.read_checkpoint(pth / "nr.pth")


@pytest.fixture(scope="module")
def downscaled(peers, nr_state):
    """(dist [2,48,64,3], pyiqa's scores, ours) of the NR model with a test-time resize to 40
    (48x64 -> 40x53), converted from the .pth: the downscaling parity check, and the one that the
    swapped-tensor tests below break (their models share its graph and input: one compile)."""
    dist = _images((48, 64), 14)
    expected = _pyiqa_scores_at(peers["nr"], dist, DOWNSCALING.test_size)
    return dist, expected, np.asarray(_forward(convert.cfanet_from_pyiqa(nr_state, DOWNSCALING), dist))


def test_downscaling_test_time_resize_equals_pyiqa(downscaled):
    """Downscaling antialiases (a wider triangle filter): 48x64 -> 40x53, model against model."""
    _, expected, got = downscaled
    assert _compare(got, expected, "NR 48x64 -> 40x53") < TOL


@pytest.mark.parametrize("size", [384, 512])
@pytest.mark.parametrize("shape", [(30, 41), (41, 30), (600, 530), (384, 500), (33, 33)])
def test_resize_equals_torchvision(shape, size):
    """resize_shorter_side is torchvision's tensor resize(x, size, antialias=True) at the
    variants' test sizes (topiq_nr-flive 384, the face variants 512), up and down."""
    import torchvision.transforms.functional as TF

    x = _images(shape, 15, n=1)
    expected = TF.resize(torch.from_numpy(x).permute(0, 3, 1, 2), size, antialias=True)
    got = np.asarray(resize_shorter_side(x, size))
    assert got.shape[1:3] == tuple(expected.shape[2:]) == shorter_side_size(*shape, size)
    np.testing.assert_allclose(got, expected.permute(0, 2, 3, 1).numpy(), atol=5e-7)


def test_antialias_weights_sum_to_one_and_widen_when_downscaling():
    down, up = bilinear_aa_matrix(10, 4), bilinear_aa_matrix(4, 10)
    np.testing.assert_allclose(down.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(up.sum(1), 1, atol=1e-6)
    assert (down > 0).sum(1).max() > 2 >= (up > 0).sum(1).max()


# ------------------------------------------------------------------------------ the parity test's teeth


def _swap_pool_norms(state):
    state["attn_pool.norm1.weight"], state["attn_pool.norm2.weight"] = (
        state["attn_pool.norm2.weight"], state["attn_pool.norm1.weight"])


def _swap_key_value(state):
    key = "sa_attn_blks.2.layers.0.self_attn.in_proj_weight"
    q, k, v = np.split(state[key], 3)
    state[key] = np.concatenate([q, v, k])


def _reverse_top_down(state):
    for name in [k for k in state if k.startswith("attn_blks.0.")]:
        other = name.replace("attn_blks.0.", "attn_blks.3.", 1)
        state[name], state[other] = state[other], state[name]


def _swap_bn_stats(state):
    a, b = "semantic_model.layer2.1.bn1.weight", "semantic_model.layer2.1.bn1.bias"
    state[a], state[b] = state[b], state[a]


@pytest.mark.parametrize("mistake", [_swap_pool_norms, _swap_key_value, _reverse_top_down, _swap_bn_stats])
def test_a_wrong_mapping_fails_the_parity_check(nr_state, downscaled, mistake):
    """A converter that mapped one tensor pair wrongly (same shapes, so no shape check catches it)
    would miss the tolerance by orders of magnitude: the downscaling check (2x2 tokens at level 5),
    with the mistake made in the state dict before the conversion."""
    dist, expected, right = downscaled
    state = dict(nr_state)  # the mistakes replace entries, never change an array in place
    mistake(state)
    wrong = _forward(convert.cfanet_from_pyiqa(state, DOWNSCALING), dist)
    assert _compare(right, expected, "right map") < TOL
    error = np.abs(np.asarray(wrong) - expected).max() / np.abs(expected).max()
    assert error > 1000 * TOL, error


# ------------------------------------------------------------------------------ the converter


def test_export_reads_as_a_pyiqa_metric(exports, scorers):
    card = (exports / "topiq_nr-flive" / "README.md").read_text()
    for words in ("cfanet_nr_flive_res50-ded1c74e.pth", "huggingface.co/chaofengc/IQA-PyTorch-Weights",
                  "PolyForm Noncommercial", "S-Lab", "higher is", "384 pixels", "sha256"):
        assert words in card, words
    assert "facexlib" not in card  # only the face variants need an aligned crop
    config = run_config.read(exports / "topiq_nr-flive")
    assert (config.model.arch, config.model.full_reference, config.model.test_size) == ("cfanet", False, 384)
    scorer = scorers["topiq_fr"]
    assert scorer.full_reference and scorer.dataset == "pyiqa"
    assert scorer.provenance["metric"] == "topiq_fr" and len(scorer.provenance["sha256"]) == 64
    with pytest.raises(UserError, match="no prompt probabilities"):
        scorer.explain(np.zeros((32, 32, 3), np.float32), ref=np.zeros((32, 32, 3), np.float32))


def test_face_variants_say_that_faces_must_be_aligned_first():
    metric = convert.METRICS["topiq_nr-face"]
    card = convert.model_card(metric, {"checkpoint": metric.file, "sha256": "0" * 64})
    assert "facexlib" in card and "512 pixels" in card
    assert convert.METRICS["topiq_nr-face-v1"].test_size == 512


def test_wrong_variant_and_truncated_files_end_in_one_line(pth, tmp_path, capfd):
    """The wrong variant through the command itself, in a process of its own (its arguments, its
    flag, its exit); the truncated file through the same conversion under the command's error
    handling (cli.one_line_errors, which cli.run wraps main in), in this process."""
    wrong = subprocess.run(**_convert_command("pyiqa", pth / "nr.pth", tmp_path / "out", "--metric",
                                              "topiq_fr"), capture_output=True, text=True, timeout=300)
    truncated = tmp_path / "cfanet_fr_kadid_res50-2c4cc61d.pth"
    data = (pth / "fr.pth").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    capfd.readouterr()
    with pytest.raises(SystemExit) as cut, cli.one_line_errors():
        convert.convert(truncated, tmp_path / "out", "topiq_fr")
    cut_stderr = capfd.readouterr().err
    for (code, stderr), says in (((wrong.returncode, wrong.stderr),
                                  "is a no-reference CFANet, but --metric topiq_fr is full-reference"),
                                 ((cut.value.code, cut_stderr), "is not a readable PyTorch checkpoint")):
        assert code == 1, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], stderr
        assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def _nr_state(peers) -> dict:
    return _state(peers["nr"])


@pytest.mark.parametrize("edit,says", [
    (lambda s: s.pop("attn_blks.1.layers.0.linear2.bias"),
     "missing (1): attn_blks.1.layers.0.linear2.bias"),
    (lambda s: s.update({"attn_pool.extra.weight": np.zeros(3, np.float32)}),
     "unexpected (1): attn_pool.extra"),
    (lambda s: s.update({"h_emb": np.zeros((1, 128, 16, 1), np.float32)}), "h_emb: file (16, 128)"),
    (lambda s: s.update({"sa_attn_blks.0.layers.0.self_attn.in_proj_weight": np.zeros((768, 128))}),
     "in_proj_weight:query: file (128, 256), model (256, 256)"),
])
def test_conversion_is_strict(peers, edit, says):
    state = _nr_state(peers)
    edit(state)
    with pytest.raises(convert.ConvertError) as err:
        convert.cfanet_from_pyiqa(state, convert.METRICS["topiq_nr"])
    assert says in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_unused_decoder_self_attention_is_the_only_ignored_tensor(peers):
    """pyiqa's decoder layers hold a self-attention their forward never calls: those keys (and the
    BatchNorm counters) are ignored, nothing else."""
    state = _nr_state(peers)
    ignored = sorted(k for k in state if convert._ignored(k))
    assert ignored and all(k.endswith("num_batches_tracked") or ".layers.0.self_attn." in k for k in ignored)
    assert not any(k.startswith(("sa_attn_blks", "attn_pool")) for k in ignored)


@pytest.mark.parametrize("edit,metric,says", [
    (lambda s: s, "topiq_fr", "no-reference CFANet, but --metric topiq_fr is full-reference"),
    (lambda s: s.update({"dim_reduce.0.0.weight": np.zeros((512, 64, 1, 1), np.float32),
                         "score_linear.6.weight": np.zeros((10, 512), np.float32)}),
     "topiq_nr", "width 512 with 10 outputs (pyiqa's topiq_iaa_res50"),
    (lambda s: [s.pop(k) for k in [k for k in s if k.startswith("semantic_model.")]]
     + [s.update({"semantic_model.patch_embed.proj.weight": np.zeros(1)})], "topiq_nr", "Swin Transformer"),
    (lambda s: [s.pop(k) for k in [k for k in s if k.startswith("dim_reduce")]], "topiq_nr",
     "not a checkpoint of pyiqa's CFANet"),
])
def test_other_architectures_are_named(peers, edit, metric, says):
    state = _nr_state(peers)
    edit(state)
    with pytest.raises(convert.ConvertError) as err:
        convert.check_variant(state, convert.METRICS[metric], "x.pth")
    assert says in str(err.value), str(err.value)


def test_a_release_of_another_metric_is_named(peers):
    released = "cfanet_nr_flive_res50-ded1c74e.pth"
    with pytest.raises(convert.ConvertError, match="pass --metric topiq_nr-flive"):
        convert.check_variant(_nr_state(peers), convert.METRICS["topiq_nr"], released)
    convert.check_variant(_nr_state(peers), convert.METRICS["topiq_nr-flive"], released)


def test_files_that_are_not_state_dicts_are_refused(tmp_path):
    from fractions import Fraction  # a class that weights_only=True refuses to build

    cases = {"object.pth": {"net": Fraction(1, 3)}, "list.pth": [torch.zeros(2)], "empty.pth": {"meta": 1}}
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(convert.ConvertError):
            convert.read_checkpoint(tmp_path / name)
    with pytest.raises(convert.ConvertError, match="no such file"):
        convert.read_checkpoint(tmp_path / "absent.pth")


def test_an_existing_folder_is_not_overwritten(pth, exports):
    with pytest.raises(convert.ConvertError, match="already exists"):
        convert.convert(pth / "nr.pth", exports / "topiq_nr", "topiq_nr")


# ------------------------------------------------------------------------------ predict on an export


def test_predict_scores_an_export_folder_as_pyiqa_does(peers, exports, tmp_path):
    from configs import base

    images = tmp_path / "images"
    images.mkdir()
    pixels = (np.random.default_rng(17).uniform(size=(2, 16, 64, 3)) * 255).astype(np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(images / f"{i}.png")
    cfg = base.get_config().predict
    cfg.inputs, cfg.output = str(images), str(tmp_path / "out.csv")
    api.predict_command(cfg, exports / "topiq_nr")
    with open(tmp_path / "out.csv") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["file"])
    got = [float(r["score"]) for r in rows]
    assert [float(r["score_normalized"]) for r in rows] == got  # pyiqa's scale is the model's own
    assert _compare(got, _pyiqa_scores(peers["nr"], pixels.astype(np.float32) / 255), "predict CSV") < 1e-5


# ------------------------------------------------------------------------------ TOPIQ's recipe


@pytest.mark.parametrize("topiq,bpclip", [("topiq_kadid_fr", "kadid_fr"), ("topiq_koniq_nr", "koniq_nr")])
def test_topiq_configs_differ_from_bpclip_only_in_model_and_recipe(topiq, bpclip):
    import importlib

    a = importlib.import_module(f"configs.{topiq}").get_config()
    b = importlib.import_module(f"configs.{bpclip}").get_config()
    assert run_config.differences(b, a) == {
        "model.arch": ("bpclip", "cfanet"), "train.nin_weight": (0.0, 1.0),
        "data.vertical_flips": (True, False)}


def test_norm_in_norm_equals_pyiqa():
    from pyiqa.losses.iqa_losses import norm_loss_with_normalization

    rng = np.random.default_rng(18)
    for n in (1, 2, 7):
        pred, target = rng.standard_normal(n).astype(np.float32), rng.uniform(size=n).astype(np.float32)
        column = lambda x: torch.from_numpy(x)[:, None]  # noqa: E731
        expected = norm_loss_with_normalization(column(pred), column(target), 1, 2).item()
        assert float(train.norm_in_norm(pred, target)) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_horizontal_only_flips_keep_the_random_stream():
    from data_pipelines.pipeline import random_window

    rngs = lambda: (np.random.default_rng(s) for s in range(40))  # noqa: E731
    both = [random_window(50, 60, 32, rng, True) for rng in rngs()]
    horizontal = [random_window(50, 60, 32, rng, True, vertical=False) for rng in rngs()]
    assert any(v for _, _, v, _ in both) and not any(v for _, _, v, _ in horizontal)
    assert [(t, left, h) for t, left, _, h in both] == [(t, left, h) for t, left, _, h in horizontal]


# Slow (~30 s on two idle cores): the compile of a CFANet's forward and backward pass, and the
# config's own random init (eager: one small compile per operation and shape). Nothing to share.
@pytest.mark.slow
def test_one_topiq_train_step():
    """configs/topiq_kadid_fr.py:tiny trains: one step of MSE + Norm-in-Norm moves every trained
    parameter (the backbone frozen, as the CPU demos train), except perhaps the attention key
    biases (zero at init, and a softmax ignores a shift common to a query's logits: their gradient
    is zero but for rounding, in pyiqa's model too)."""
    from bpclip_jax.build import create_model
    from configs import topiq_kadid_fr

    config = topiq_kadid_fr.get_config("tiny")
    model = create_model(config.model)
    tx, _ = train.make_optimizer(config.optim, 10)
    graphdef, state = train.create_train_state(model, tx, freeze_backbone=True)  # half the compile
    rng = np.random.default_rng(19)
    # 64x64: a 2x2 token grid (at 32x32 one token, whose attention weights are 1 whatever q and k)
    batch = {"dist": rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
             "ref": rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
             "score": rng.uniform(size=4).astype(np.float32)}
    step = jax.jit(train.make_train_step(graphdef, nin_weight=config.train.nin_weight))
    new, metrics = step(state, batch, train.Hyper.of(config.optim, 10, config.seed))
    moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), state.params, new.params)
    still = [path for path, v in nnx.to_flat_state(moved) if not v.get_value()]
    assert all(path[-2:] == ("key", "bias") for path in still), still
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
