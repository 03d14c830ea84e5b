"""ResNet50 parity with torchvision through the strict state-dict loader."""

import numpy as np
import pytest

from bpclip_jax.models.resnet import level_shapes
from bpclip_jax.weights import WeightLoadError, resnet50_from_state_dict

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def torch_resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    with torch.no_grad():  # non-trivial BatchNorm: random affine and running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _torch_levels(model, x):
    m = model
    with torch.no_grad():
        act1 = m.relu(m.bn1(m.conv1(x)))
        levels = [act1]
        h = m.maxpool(act1)
        for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
            h = layer(h)
            levels.append(h)
    return [t.permute(0, 2, 3, 1).numpy() for t in levels]


@pytest.mark.parametrize("size", [(384, 384), (197, 261)])
def test_resnet50_matches_torchvision(torch_resnet, size):
    ours = resnet50_from_state_dict({k: v.numpy() for k, v in torch_resnet.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((1, *size, 3)).astype(np.float32)
    expected = _torch_levels(torch_resnet, torch.from_numpy(x).permute(0, 3, 1, 2))
    got = ours(x)
    assert [g.shape[1:3] for g in got] == level_shapes(*size)
    for level, (g, e) in enumerate(zip(got, expected), start=1):
        assert g.shape == e.shape, level
        rel = np.abs(np.asarray(g) - e).max() / np.abs(e).max()
        print(f"level {level} {e.shape}: max relative error {rel:.2e}")
        assert rel <= 1e-4, (level, rel)


def test_strict_loading_names_every_problem(torch_resnet):
    state = {k: v.numpy() for k, v in torch_resnet.state_dict().items()}
    state.pop("layer2.1.conv2.weight")
    state["layer5.0.conv1.weight"] = np.zeros((1,))
    state["layer1.0.bn1.running_var"] = np.ones((65,), np.float32)
    state["fc.weight"] = np.zeros((1000, 2048))  # ignored, as are the BatchNorm counters
    with pytest.raises(WeightLoadError) as err:
        resnet50_from_state_dict(state)
    message = str(err.value)
    assert "missing (1): layer2.1.conv2.weight" in message
    assert "unexpected (1): layer5.0.conv1.weight" in message
    assert "layer1.0.bn1.running_var: file (65,), model (64,)" in message
    assert "fc.weight" not in message and "num_batches_tracked" not in message
