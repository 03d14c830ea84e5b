"""Loading pretrained parts from files in the hub's formats, and building BPCLIP from a config."""

import jax
import numpy as np
import pytest
from flax import nnx

from bpclip_jax.build import create_model
from bpclip_jax.text import prompt_features
from bpclip_jax.weights import load_resnet50, resnet50_from_state_dict
from configs import base

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A random torchvision ResNet50 saved as timm's hub file: <dir>/model.safetensors."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path_factory.mktemp("resnet") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path, {k: v.numpy() for k, v in state.items()}


def _same_state(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(nnx.state(a)),
                                                    jax.tree.leaves(nnx.state(b)), strict=True))


def test_load_resnet50_from_file_and_directory(resnet_file):
    path, state = resnet_file
    expected = resnet50_from_state_dict(state)
    assert _same_state(load_resnet50(str(path)), expected)
    assert _same_state(load_resnet50(str(path.parent)), expected)


def test_load_resnet50_offline_names_the_file_to_download():
    with pytest.raises(FileNotFoundError, match=r"Download https://huggingface.co/timm/resnet50.a1_in1k/"
                                                r"resolve/main/model.safetensors"):
        load_resnet50("timm/resnet50.a1_in1k")
    with pytest.raises(FileNotFoundError, match="neither a local file"):
        load_resnet50("/no/such/weights.safetensors")


def test_create_model_loads_both_pretrained_parts(resnet_file, tiny_clip_dir):
    cfg = base.model_config()
    cfg.resnet_source, cfg.clip_source = str(resnet_file[0]), str(tiny_clip_dir)
    model = create_model(cfg)
    assert _same_state(model.backbone, resnet50_from_state_dict(resnet_file[1]))
    np.testing.assert_array_equal(model.text_features[...], prompt_features(str(tiny_clip_dir)))


def test_create_model_pretrained_fails_loudly_offline():
    with pytest.raises(FileNotFoundError, match="Download"):
        create_model(base.model_config())


def test_create_model_random_says_so(caplog):
    cfg = base.get_config("tiny").model
    with caplog.at_level("WARNING"):
        model = create_model(cfg)
    assert "pretrained=False" in caplog.text
    assert model.text_features.shape == (40, 512)
