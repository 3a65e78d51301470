"""from_state_dict: the PyTorch quickstart's model.pth without its class; the activation it assumes is said; state
dicts of anything but a Linear stack are refused with a message naming from_module."""

import re
import warnings

import pytest
import torch
from torch import nn

from hookedmlp import CheckpointError, ConfigError, HookedMLP

FROM_MODULE = "build the network in PyTorch, load the state dict into it, and wrap it with HookedMLP.from_module"
ASSUMED = (
    "from_state_dict: a state dict does not record the activation between the Linear layers; assuming ReLU "
    "(pass activation='relu' to confirm, or the right one)"
)


class NeuralNetwork(nn.Module):
    """The PyTorch quickstart's model, verbatim."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


def test_the_quickstarts_model_pth_loads(tmp_path):
    torch.manual_seed(7)
    net = NeuralNetwork().eval()
    torch.save(net.state_dict(), tmp_path / "model.pth")  # what the quickstart does
    sd = torch.load(tmp_path / "model.pth", weights_only=True)
    with pytest.warns(UserWarning, match=re.escape(ASSUMED)):
        m = HookedMLP.from_state_dict(sd).eval()
    assert [type(layer.module) for layer in m.layout.layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert m.input_shape == (1, 28, 28)
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = net(x)
        assert torch.equal(m(x), expected)
        out, cache = m.run_with_cache(x, names_filter=["layer0.post", "layer3.post"])
        stack = net.linear_relu_stack
        assert torch.equal(out, expected)
        assert torch.equal(cache["layer0.post"], stack[0](net.flatten(x)))
        assert torch.equal(cache["layer3.post"], stack[3](stack[2](stack[1](stack[0](net.flatten(x))))))
    # the weights were copied, not shared
    assert m.layer0.module.weight.data_ptr() != net.linear_relu_stack[0].weight.data_ptr()
    assert torch.equal(m.layer0.module.weight, net.linear_relu_stack[0].weight)


def test_a_named_activation_is_used_without_a_warning(tiny_x):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3, bias=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = HookedMLP.from_state_dict(seq.state_dict(), activation="tanh")  # Linear layers at 1, 3
    assert [type(layer.module) for layer in m.layout.layers] == [nn.Linear, nn.Tanh, nn.Linear]
    assert m.layer2.module.bias is None
    with torch.no_grad():
        assert torch.equal(m(tiny_x), seq(tiny_x))


def test_float64_weights_stay_float64(tiny_seq, tiny_x):
    seq = tiny_seq.double()
    m = HookedMLP.from_state_dict(seq.state_dict(), activation="relu")
    assert m.layer0.module.weight.dtype == torch.float64
    with torch.no_grad():
        assert torch.equal(m(tiny_x.double()), seq(tiny_x.double()))


def test_batch_norm_buffers_are_refused_naming_from_module():
    sd = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2)).state_dict()
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            "unexpected key '1.running_mean' (batch norm statistics); from_state_dict reads only Linear stacks with "
            f"keys like 'linear_relu_stack.0.weight'. For other networks, {FROM_MODULE}"
        ),
    ):
        HookedMLP.from_state_dict(sd, activation="relu")


def test_conv_and_norm_weights_are_refused_naming_from_module():
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 26 * 26, 10)).state_dict()
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            "index 0 has a weight of shape [2, 1, 3, 3]: a Linear layer's weight is 2-D, this looks like a "
            f"convolution's; {FROM_MODULE}"
        ),
    ):
        HookedMLP.from_state_dict(conv, activation="relu")
    norm = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.ReLU(), nn.Linear(3, 2)).state_dict()
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"index 1 has a weight of shape [3]: a Linear layer's weight is 2-D, this looks like a norm's or PReLU's; "
            f"{FROM_MODULE}"
        ),
    ):
        HookedMLP.from_state_dict(norm, activation="relu")


def test_no_warning_for_a_state_dict_that_is_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError):
            HookedMLP.from_state_dict({"0.weight": torch.zeros(3, 4), "0.running_mean": torch.zeros(3)})


@pytest.mark.parametrize(
    "sd,message",
    [
        ({}, "the state dict is empty; expected the weights of a Sequential of Linear layers"),
        (
            {"0.weight": torch.zeros(3, 4), "0.scale": torch.zeros(3)},
            "unexpected key '0.scale' (a module other than Linear); from_state_dict reads only Linear stacks",
        ),
        (
            {"a.0.weight": torch.zeros(3, 4), "b.2.weight": torch.zeros(2, 3)},
            "keys have several prefixes ['a.', 'b.']; pass the state dict of one Sequential",
        ),
        (
            {"0.weight": torch.zeros(3, 4), "4.weight": torch.zeros(2, 3)},
            "Linear layers at indices [0, 4]; expected them at every other index (0, 2, 4, ...: Linear, activation, "
            f"Linear, ...). For other stacks, {FROM_MODULE}",
        ),
        ({"2.weight": torch.zeros(3, 4), "4.weight": torch.zeros(2, 3)}, "Linear layers at indices [2, 4]"),
        (
            {"0.bias": torch.zeros(3), "2.weight": torch.zeros(2, 3)},
            f"index 0 has ['bias'] but no weight; a Linear layer has '0.weight'. For other networks, {FROM_MODULE}",
        ),
        (
            {"0.weight": torch.zeros(3, 4), "2.weight": torch.zeros(2, 5)},
            "Linear at index 2 takes 5 inputs but the previous one gives 3",
        ),
        (
            {"0.weight": torch.zeros(3, 4), "0.bias": torch.zeros(7)},
            "Linear at index 0: bias has shape [7], expected [3] to match its weight [3, 4]",
        ),
        (
            {"0.weight": [[0.0]]},
            "'0.weight' holds a list, not a tensor; pass a state dict (torch.load(path, weights_only=True))",
        ),
    ],
)
def test_malformed_state_dicts(sd, message):
    with pytest.raises(CheckpointError, match=re.escape(message)):
        HookedMLP.from_state_dict(sd, activation="relu")


def test_unknown_activation(tiny_seq):
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "activation must be one of 'relu', 'gelu', 'tanh', 'sigmoid', 'silu', "
            "'elu', 'softplus', 'leaky_relu', 'identity', got 'swish'"
        ),
    ):
        HookedMLP.from_state_dict(tiny_seq.state_dict(), activation="swish")
