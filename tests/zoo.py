"""The kinds of network researchers bring, built small and seeded, for the capture tests.

``KINDS`` maps a name to ``(build, input_shape)``; ``build()`` returns a fresh seeded network in
eval mode. ``SILENTLY_WRONG`` are networks the old probe-based wrapping accepted while computing
something else; ``REFUSED`` are networks no graph capture can represent, with the reason a user
must read.
"""

import torch
import torch.nn.functional as F
from torch import nn

try:  # optional (hookedmlp[torchvision]); .ci/run's oldest-torch run has no torchvision
    import torchvision
except ImportError:
    torchvision = None


class Quickstart(nn.Module):
    """The PyTorch quickstart's NeuralNetwork, smaller."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3)
        )

    def forward(self, x):
        return self.linear_relu_stack(self.flatten(x))


class Functional(nn.Module):
    """F.relu, torch.tanh and x.view in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 10), nn.Linear(10, 10), nn.Linear(10, 3)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = torch.tanh(self.fc2(x))
        return self.fc3(x)


class Residual(nn.Module):
    """``x = x + self.block(x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 8)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 12), nn.GELU(), nn.Linear(12, 8)) for _ in range(2)
        )
        self.unembed = nn.Linear(8, 3)

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = x + block(x)
        return self.unembed(x)


class AdaptiveCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.head = nn.Linear(24, 3)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(torch.flatten(self.pool(x), 1))


class Looped(nn.Module):
    """An nn.ModuleList looped over in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(16, 8), nn.Linear(8, 8), nn.Linear(8, 3)])

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class Twice(nn.Module):
    """One module used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.fc_in, self.shared, self.fc_out = nn.Linear(16, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.act = nn.ReLU()

    def forward(self, x):
        x = self.act(self.fc_in(x))
        x = self.act(self.shared(x))
        x = self.act(self.shared(x))
        return self.fc_out(x)


class Autoencoder(nn.Module):
    """Nested encoder/decoder modules."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(16, 8), nn.ReLU()), nn.Linear(8, 4))
        self.decoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 16), nn.Unflatten(1, (1, 4, 4)))

    def forward(self, x):
        return self.decoder(self.encoder(x))


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head, self.aux = nn.Linear(16, 8), nn.Linear(8, 3), nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return self.head(h), self.aux(h)


class DictOut(TupleOut):
    def forward(self, x):
        h = torch.relu(self.body(x))
        return {"logits": self.head(h), "features": h}


class Transformer(nn.Module):
    """A small nn.TransformerEncoder over 4 tokens of 4 features."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.embed = nn.Linear(4, 8)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))


def _quickstart() -> nn.Module:
    return Quickstart()


def _bn_dropout() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 3)
    )


def _identity_unflatten() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Identity(),
        nn.Linear(16, 16),
        nn.Unflatten(1, (1, 4, 4)),
        nn.Conv2d(1, 2, 3),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def _resnet18() -> nn.Module:
    return torchvision.models.resnet18(num_classes=10)


def _mobilenet() -> nn.Module:
    return torchvision.models.mobilenet_v3_small(num_classes=10)


def _hooked_by_user() -> nn.Module:
    net = Quickstart()
    net.linear_relu_stack[1].register_forward_hook(lambda m, i, o: o * 0.5)
    return net


def _seeded(make):
    def build():
        torch.manual_seed(0)
        return make().eval()

    return build


KINDS = {
    "quickstart": (_seeded(_quickstart), (1, 4, 4)),
    "bn_dropout": (_seeded(_bn_dropout), (1, 4, 4)),
    "functional": (_seeded(Functional), (16,)),
    "residual": (_seeded(Residual), (16,)),
    "adaptive_cnn": (_seeded(AdaptiveCNN), (1, 8, 8)),
    "looped": (_seeded(Looped), (16,)),
    "twice": (_seeded(Twice), (16,)),
    "autoencoder": (_seeded(Autoencoder), (1, 4, 4)),
    "tuple_out": (_seeded(TupleOut), (16,)),
    "dict_out": (_seeded(DictOut), (16,)),
    "transformer": (_seeded(Transformer), (4, 4)),
    "identity_unflatten": (_seeded(_identity_unflatten), (1, 4, 4)),
    "hooked_by_user": (_seeded(_hooked_by_user), (1, 4, 4)),
}
if torchvision is not None:
    KINDS["resnet18"] = (_seeded(_resnet18), (3, 32, 32))
    KINDS["mobilenet"] = (_seeded(_mobilenet), (3, 32, 32))
# the kinds whose output is not one tensor: which output is the logits
OUTPUTS = {"tuple_out": 0, "dict_out": "logits"}


class ClampInput(Quickstart):
    def forward(self, x):
        return self.linear_relu_stack(self.flatten(x.clamp(0, 1)))


class AbsInput(Quickstart):
    def forward(self, x):
        return self.linear_relu_stack(self.flatten(x.abs()))


class ClampBetween(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.fc1(x).clamp(max=1))


class FunctionalDropout(ClampBetween):
    def forward(self, x):
        return self.fc2(F.dropout(torch.relu(self.fc1(x)), 0.5, self.training))


class LogitScale(ClampBetween):
    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(3.0))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))) * self.logit_scale


class Detached(ClampBetween):
    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)).detach())


SILENTLY_WRONG = {
    "clamp_input": (_seeded(ClampInput), (1, 4, 4)),
    "abs_input": (_seeded(AbsInput), (1, 4, 4)),
    "clamp_between": (_seeded(ClampBetween), (16,)),
    "functional_dropout": (_seeded(FunctionalDropout), (16,)),
    "logit_scale": (_seeded(LogitScale), (16,)),
    "detached": (_seeded(Detached), (16,)),
}


class DataDependent(ClampBetween):
    def forward(self, x):
        h = self.fc1(x)
        if h.sum() > 0:  # the branch taken depends on the data
            h = torch.relu(h)
        return self.fc2(h)


class Counter(ClampBetween):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1  # Python state that changes at every call
        return self.fc2(self.fc1(x)) * self.calls


class TrainingBranch(ClampBetween):
    def forward(self, x):
        h = self.fc1(x)
        if self.training:  # a branch tracing would freeze
            h = h + 0.1 * torch.randn_like(h)
        return self.fc2(h)


REFUSED = {
    "data_dependent": (_seeded(DataDependent), (16,), "control flow that depends on the data"),
    "python_state": (_seeded(Counter), (16,), "assigns self.calls"),
    "training_branch": (_seeded(TrainingBranch), (16,), "branches on self.training"),
}


class ShapeBranch(nn.Module):
    """Control flow on a shape: torch.fx cannot trace it, torch.export can (specialised to the captured shapes)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.drop = nn.Linear(16, 8), nn.Linear(8, 3), nn.Dropout(0.5)

    def forward(self, x):
        if x.dim() == 4:
            x = x.flatten(1)
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


EXPORTED = {"shape_branch": (_seeded(ShapeBranch), (1, 4, 4))}
