"""Labelled data of the user's own (issue 9 point 4): class contrasts from ``(images, labels)`` or a
torch ``Dataset`` (with and without ``targets``), the number of classes from the data, the
``exemplar``-th example of each class, class means streamed in batches, and the MNIST default
(an error for other input shapes, a DataWarning for models not recorded as MNIST-trained).

References are plain torch: a deep copy of the network, activations read with PyTorch forward
hooks on its modules, exemplar rows found in the raw label list.
"""

import copy
import re
import warnings

import pytest
import torch
from torch import nn

from hookedmlp import (
    ArgumentTypeError,
    ConfigError,
    DataWarning,
    HookedMLP,
    InputDtypeError,
    ShapeError,
    UsageError,
)
from hookedmlp.data import load_mnist
from hookedmlp.data.labelled import Labelled
from hookedmlp.steering import class_activations

N = 30  # examples in the user's data set: classes 0, 1, 2


@pytest.fixture
def seq():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


@pytest.fixture
def net(seq):
    return HookedMLP.from_module(copy.deepcopy(seq)).eval()


@pytest.fixture(scope="module")
def user_data():
    g = torch.Generator().manual_seed(3)
    return torch.rand(N, 16, generator=g), torch.randint(0, 3, (N,), generator=g)


class Items(torch.utils.data.Dataset):
    """A map-style Dataset of (image, label) items that counts the items read."""

    def __init__(self, images, labels, with_targets):
        self.images, self.labels, self.reads = images, labels, 0
        if with_targets:
            self.targets = labels.tolist()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.reads += 1
        return self.images[i], int(self.labels[i])


def torch_acts(seq, x, index):
    """The output of ``seq[index]`` on ``x``, read with a PyTorch forward hook."""
    out = []
    handle = seq[index].register_forward_hook(lambda module, args, output: out.append(output.detach().clone()))
    with torch.no_grad():
        seq(x)
    handle.remove()
    return out[0]


def row(labels, cls, k=0):
    return [i for i, c in enumerate(labels.tolist()) if c == cls][k]


# -- (images, labels) and Datasets --------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 4])
def test_first_with_exemplar_k_is_the_kth_example_of_each_class(net, seq, user_data, k):
    images, labels = user_data
    v = net.steering_vector(2, 0, "layer2.post", exemplar=k, data=(images, labels))
    expected = torch_acts(seq, images[[row(labels, 2, k)]], 2)[0] - torch_acts(seq, images[[row(labels, 0, k)]], 2)[0]
    assert torch.equal(v["layer2.post"], expected)
    assert (v.meta["method"], v.meta["data"], v.meta.get("exemplar", 0)) == ("first", f"given data (n={N})", k)
    x = torch.rand(5, 16)
    with net.steer(a=2, b=0, hook="layer2.post", exemplar=k, data=(images, labels)):
        steered = net(x)
    ref = seq[3:](torch_acts(seq, x, 2) + expected).detach()  # the rest of the network, plain
    assert torch.equal(steered, ref)


def test_mean_streams_in_batches_and_equals_a_plain_mean(net, seq, user_data, monkeypatch):
    images, labels = user_data
    seen = []
    real = net.clean_activations
    monkeypatch.setattr(net, "clean_activations", lambda x, names: seen.append(len(x)) or real(x, names))
    acts, counts, name = class_activations(
        net, [0, 1, 2], ["layer0.post", "layer3.post"], "mean", data=(images, labels), batch_size=7
    )
    assert (
        seen == [7, 7, 7, 7, 2]
        and counts == [int((labels == c).sum()) for c in range(3)]
        and name == f"given data (n={N})"
    )
    for hook, index in (("layer0.post", 0), ("layer3.post", 3)):
        plain = torch.stack([torch_acts(seq, images[labels == c], index).mean(0) for c in range(3)])
        torch.testing.assert_close(acts[hook], plain, rtol=1e-6, atol=1e-7)
    one_pass, _, _ = class_activations(net, [0, 1, 2], ["layer0.post"], "mean", data=(images, labels))
    torch.testing.assert_close(one_pass["layer0.post"], acts["layer0.post"], rtol=1e-6, atol=1e-7)
    v = net.steering_vector(1, 2, "layer0.post", method="mean", data=(images, labels))
    assert torch.equal(v["layer0.post"], one_pass["layer0.post"][1] - one_pass["layer0.post"][2])
    assert v.meta["n_examples"] == counts[1:]


@pytest.mark.parametrize("with_targets", [True, False])
def test_a_dataset_gives_the_same_vectors(net, user_data, with_targets):
    images, labels = user_data
    dataset = Items(images, labels, with_targets)
    items = [(images[i], int(labels[i])) for i in range(N)]  # a list of items is a Dataset too
    arrays = (images.numpy(), labels.numpy())  # and numpy arrays are a pair like tensors
    for method in ("first", "mean"):
        v = net.steering_vector(2, 1, "layer1.post", method=method, data=dataset)
        w = net.steering_vector(2, 1, "layer1.post", method=method, data=(images, labels))
        u = net.steering_vector(2, 1, "layer1.post", method=method, data=items)
        a = net.steering_vector(2, 1, "layer1.post", method=method, data=arrays)
        assert all(torch.equal(t["layer1.post"], w["layer1.post"]) for t in (u, v, a))
        assert (v.meta["data"], u.meta["data"]) == (f"Items (n={N})", f"list (n={N})")
    dataset.reads = 0
    Labelled(dataset).exemplar(2, 1)
    assert dataset.reads == (1 if with_targets else N + 1)  # targets: no image is read to find the labels


def test_the_number_of_classes_comes_from_the_data(net, user_data):
    images, labels = user_data
    assert Labelled((images, labels)).n_classes == 3
    with pytest.raises(
        ConfigError, match=re.escape(f"a (a class of given data (n={N}), or input tensors) must be from 0 to 2, got 3")
    ):
        net.steering_vector(3, 0, "layer0.post", data=(images, labels))
    dataset = Items(images, labels, True)
    dataset.classes = ["cat", "dog", "bird", "fish"]  # a fourth class without examples
    assert Labelled(dataset).n_classes == 4
    with pytest.raises(
        UsageError, match=re.escape(f"Items (n={N}) has 0 examples of class 3; exemplar 0 does not exist")
    ):
        net.steering_vector(3, 0, "layer0.post", data=dataset)
    with pytest.raises(
        UsageError, match=re.escape(f"Items (n={N}) has no example of class(es) [3]; the class mean is undefined")
    ):
        net.steering_vector(3, 0, "layer0.post", method="mean", data=dataset)
    with pytest.raises(
        UsageError,
        match=f"has {int((labels == 1).sum())} examples of class 1; exemplar 99 does not exist "
        r"\(exemplars count from 0\)",
    ):
        net.steering_vector(1, 0, "layer0.post", exemplar=99, data=(images, labels))


@pytest.mark.parametrize(
    "data, error, message",
    [
        (
            (torch.zeros(4, 16, dtype=torch.uint8), torch.tensor([0, 1, 0, 1])),
            InputDtypeError,
            r"images from given data \(n=4\) have dtype torch.uint8; expected floating point .* images.float\(\) / 255",
        ),
        ((torch.full((4, 16), float("nan")), torch.tensor([0, 1, 0, 1])), UsageError, "contain NaN or infinite values"),
        ((torch.zeros(4, 16), torch.tensor([0.0, 1.0, 0.0, 1.0])), ShapeError, "labels must be a 1-D integer tensor"),
        (
            (torch.zeros(4, 16), torch.tensor([0, 1, 0])),
            ShapeError,
            "one label per example .* got 4 examples, 3 labels",
        ),
        ((torch.zeros(4, 16), torch.tensor([0, -1, 0, 1])), ShapeError, r"class numbers >= 0, got \[-1\]"),
        ((torch.zeros(4, 15), torch.tensor([0, 1, 0, 1])), ShapeError, r"expected input of shape \[batch, 16\]"),
        ([("not an image", 0), ("x", 1)], ArgumentTypeError, "images must be tensors or arrays, got str at index 0"),
        ([torch.zeros(16)], ArgumentTypeError, r"items must be \(image, label\) pairs, got Tensor at index 0"),
        (
            "mnist",
            ArgumentTypeError,
            "labelled data must be an \\(images, labels\\) pair of tensors or a torch Dataset",
        ),
    ],
)
def test_bad_data_says_what_is_wrong(net, data, error, message):
    with pytest.raises(error, match=message):
        net.steering_vector(1, 0, "layer0.post", data=data)
    assert net.attached_hooks() == []


def test_python_lists_of_images_and_labels_are_a_pair_not_a_two_item_dataset(net, user_data):
    """Issue 21, item 10: ``([image, ...], [label, ...])`` used to be read as a Dataset of two items."""
    images, labels = user_data
    as_lists = Labelled((list(images), labels.tolist()))
    assert len(as_lists) == N and as_lists.name == f"given data (n={N})"
    assert torch.equal(as_lists.rows(torch.arange(N)), images) and torch.equal(as_lists.labels, labels)
    v = net.steering_vector(1, 0, "layer0.post", data=(list(images), labels.tolist()))
    assert torch.equal(v["layer0.post"], net.steering_vector(1, 0, "layer0.post", data=user_data)["layer0.post"])
    items = [(images[0], int(labels[0])), (images[1], int(labels[1]))]  # two (image, label) items: a Dataset
    assert len(Labelled(items)) == 2 and Labelled(items).name == "list (n=2)"


def test_a_list_of_images_of_different_shapes_says_which(user_data):
    images, labels = user_data
    with pytest.raises(ShapeError, match=r"every image must have one shape, got \[16\] at 0 and \[15\] at 2"):
        Labelled(([images[0], images[1], images[2, :15]], [0, 1, 2]))


class OneHot(torch.utils.data.Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        return torch.zeros(16), torch.nn.functional.one_hot(torch.tensor(i), 3)[:2]


def test_a_dataset_whose_label_is_a_two_element_tensor_says_so():
    """Before: a raw ValueError from int() of a 2-element tensor."""
    with pytest.raises(ArgumentTypeError) as info:
        Labelled(OneHot())
    assert str(info.value) == (
        "OneHot (n=3)'s labels must be single integers, got a Tensor of shape [2] at index 0; for one-hot labels "
        "give the Dataset a target_transform returning label.argmax()"
    )


# -- the MNIST default ---------------------------------------------------------------------------


def test_a_model_not_shaped_like_mnist_needs_data(net):
    expected = re.escape(
        "class labels need labelled data: this model's input is [1, 4, 4], not MNIST's [1, 28, 28]; pass "
        "data=(images, labels) or a labelled Dataset"
    )
    with pytest.raises(UsageError, match=expected):
        net.steering_vector(3, 1, "layer0.post")
    with pytest.raises(UsageError, match=expected):
        net.steer(a=3, b=torch.rand(16), hook="layer0.post")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = net.steering_vector(torch.rand(16), torch.rand(2, 16), "layer0.post")  # inputs need no data
    assert v.meta["n_examples"] == [1, 2] and "data" not in v.meta and "method" not in v.meta


def test_a_model_whose_classes_are_not_mnists_needs_data():
    """784 inputs but 3 outputs: the first training images of MNIST's digits would be meaningless."""
    torch.manual_seed(0)
    three = HookedMLP.from_module(nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 3)))
    expected = re.escape(
        "class labels need labelled data: this model's output (layer2.post) has 3 classes, not MNIST's 10; pass "
        "data=(images, labels) or a labelled Dataset"
    )
    with pytest.raises(UsageError, match=expected):
        three.steering_vector(2, 1, "layer0.post")
    with pytest.raises(UsageError, match=expected):
        three.steer(a=2, b=1, hook="layer0.post")
    assert three.attached_hooks() == []
    images, labels = load_mnist("test")
    v = three.steering_vector(2, 1, "layer0.post", data=(images[:100], labels[:100] % 3))
    assert v.meta["data"] == "given data (n=100)"


def test_an_mnist_shaped_model_not_recorded_as_mnist_warns_once(model):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fashion = HookedMLP.from_module(
            nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
        ).eval()
    with pytest.warns(
        DataWarning,
        match=re.escape(
            "class labels are resolved through MNIST's train images, but this "
            "model does not record being trained on MNIST; pass data=(images, labels)"
        ),
    ):
        v = fashion.steering_vector(3, 1, "layer0.post")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per model
        with fashion.steer(a=3, b=1, hook="layer0.post"):
            pass
        assert model.meta["dataset"] == "mnist"
        model.steering_vector(3, 1, "layer0.post")  # the shipped model does not warn
    assert torch.equal(
        v["layer0.post"], fashion.steering_vector(3, 1, "layer0.post", data=load_mnist("train"))["layer0.post"]
    )
    assert v.meta["data"] == "MNIST train"
    confirmed = HookedMLP.from_module(nn.Sequential(nn.Flatten(), nn.Linear(784, 10))).eval()
    confirmed.meta["dataset"] = "mnist"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        confirmed.steering_vector(3, 1, "layer0.post")
