"""Labelled data for class contrasts: ``(images, labels)`` tensors or a torch ``Dataset``; MNIST by default.

``Labelled`` answers the questions steering asks of a data set: how many classes, which rows
belong to a class, the k-th example of a class, and the rows of some classes in batches. A
``Dataset`` is read item by item only where needed (its ``targets`` attribute, when present,
gives the labels without reading the images). ``hookedmlp.steering.classes`` turns classes into the
activations that stand for them: the ``exemplar``-th example of each, or the class mean.
"""

import math
import numbers
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import torch
from torch import Tensor

from hookedmlp.checks import check_class, check_int
from hookedmlp.data.mnist import load_mnist
from hookedmlp.errors import (
    ArgumentTypeError,
    InputDtypeError,
    ShapeError,
    UsageError,
    warn,
)
from hookedmlp.models import facts

__all__ = [
    "Labelled",
    "as_labelled",
    "check_examples",
    "check_images",
    "default_data",
    "METHODS",
    "MNIST_SHAPE",
    "DataWarning",
]

METHODS = ("first", "mean")
MNIST_SHAPE = (1, 28, 28)
MNIST_CLASSES = 10
_WARNED: "weakref.WeakSet[Any]" = weakref.WeakSet()  # models already warned about the MNIST default


class DataWarning(UserWarning):
    """Class contrasts resolved through data the model may not have been trained on."""


class Labelled:
    """A labelled data set; ``name`` says where it came from (e.g. ``"MNIST train"``).

    Args:
        data: an ``(images, labels)`` pair of tensors (labels: 1-D integers from 0), or a
            ``Dataset`` whose items are ``(image, label)``.
        name: how messages and provenance name it.
    """

    def __init__(self, data: Any, name: Optional[str] = None) -> None:
        if isinstance(data, Labelled):
            self.__dict__.update(data.__dict__)
            return
        self._images: Optional[Tensor] = None
        self._dataset: Any = None
        if _is_pair(data):
            images, self.labels = check_examples(data[0], data[1], "labelled data")
            self._images = images
            self.name = name or f"given data (n={len(images)})"
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (Tensor, str)):
            self._dataset = data
            self.name = name or f"{type(data).__name__} (n={len(data)})"
            targets = getattr(data, "targets", None)
            labels = targets if targets is not None else [_item(data, i, self.name)[1] for i in range(len(data))]
            self.labels = _labels(labels, len(data), self.name)
        else:
            raise ArgumentTypeError(
                f"labelled data must be an (images, labels) pair of tensors or a torch Dataset of "
                f"(image, label) items, got {type(data).__name__}"
            )
        classes = getattr(data, "classes", None)
        self.n_classes = max(len(classes) if classes else 0, int(self.labels.max()) + 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"Labelled({self.name}, {self.n_classes} classes)"

    def rows(self, index: Tensor) -> Tensor:
        """The images at ``index`` (a 1-D tensor of row numbers), stacked."""
        if self._images is not None:
            return self._images[index]
        return torch.stack([_item(self._dataset, int(i), self.name)[0] for i in index])

    def indices(self, cls: int) -> Tensor:
        return (self.labels == check_class(cls, self.n_classes, "class")).nonzero().squeeze(1)

    def exemplar(self, cls: int, k: int = 0) -> tuple[Tensor, int]:
        """The ``k``-th example of class ``cls`` (0-based) as a batch of one, and its row number."""
        where = self.indices(cls)
        k = check_int(k, "exemplar", low=0)
        if k >= len(where):
            raise UsageError(
                f"{self.name} has {len(where)} examples of class {cls}; exemplar {k} does not exist "
                f"(exemplars count from 0)"
            )
        row = int(where[k])
        return self.rows(where[k : k + 1]), row

    def batches(self, classes: Sequence[int], batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """``(images, labels)`` of the rows whose label is in ``classes``, in order, ``batch_size`` at a time."""
        wanted = torch.tensor([check_class(c, self.n_classes, "class") for c in classes])
        index = torch.isin(self.labels, wanted).nonzero().squeeze(1)
        for i in range(0, len(index), batch_size):
            part = index[i : i + batch_size]
            yield self.rows(part), self.labels[part]


def _is_pair(data: Any) -> bool:
    """``(images, labels)``, as opposed to a Dataset of two ``(image, label)`` items: the second is a label column."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    labels = data[1]
    if hasattr(labels, "shape"):
        return len(labels.shape) >= 1
    return isinstance(labels, (list, tuple)) and all(
        isinstance(v, numbers.Number) or (hasattr(v, "shape") and len(v.shape) == 0) for v in labels
    )


def _item(dataset: Any, i: int, name: str) -> tuple[Tensor, int]:
    """Item ``i`` of a Dataset as ``(image tensor, int label)``, or a clear error about what the items are."""
    item = dataset[i]
    if not (isinstance(item, (tuple, list)) and len(item) >= 2):
        raise ArgumentTypeError(f"{name}'s items must be (image, label) pairs, got {type(item).__name__} at index {i}")
    image, label = item[0], item[1]
    try:
        image = torch.as_tensor(image)
    except (TypeError, RuntimeError, ValueError):
        raise ArgumentTypeError(
            f"{name}'s images must be tensors or arrays, got {type(image).__name__} at index {i}; "
            "give the Dataset a transform such as torchvision's ToTensor()"
        ) from None
    if hasattr(label, "shape") and math.prod(label.shape) != 1:
        raise ArgumentTypeError(
            f"{name}'s labels must be single integers, got a {type(label).__name__} of shape {list(label.shape)} at "
            f"index {i}; for one-hot labels give the Dataset a target_transform returning label.argmax()"
        )
    if isinstance(label, bool) or not isinstance(label, (int, Tensor)) and not hasattr(label, "__index__"):
        raise ArgumentTypeError(
            f"{name}'s labels must be integers, got {type(label).__name__} ({label!r}) at index {i}"
        )
    if isinstance(label, Tensor) and (label.is_floating_point() or label.dtype == torch.bool):
        raise ArgumentTypeError(f"{name}'s labels must be integers, got a {label.dtype} tensor at index {i}")
    return image, int(label)


def _as_images(images: Any, what: str) -> Tensor:
    """A tensor of examples from a tensor, an array, or a list of equally shaped tensors or arrays."""
    if isinstance(images, Tensor):
        return images
    if isinstance(images, (list, tuple)) and images and all(hasattr(x, "shape") for x in images):
        rows = [torch.as_tensor(x) for x in images]
        shapes = [tuple(r.shape) for r in rows]
        odd = next((i for i, sh in enumerate(shapes) if sh != shapes[0]), None)
        if odd is not None:
            raise ShapeError(
                f"{what}: every image must have one shape, got {list(shapes[0])} at 0 and {list(shapes[odd])} at {odd}"
            )
        return torch.stack(rows)
    try:
        return torch.as_tensor(images)
    except (TypeError, RuntimeError, ValueError):
        raise ArgumentTypeError(
            f"{what}: images must be a tensor, an array or a list of them, got {type(images).__name__}"
        ) from None


def _labels(labels: Any, n: int, what: str, n_classes: Optional[int] = None) -> Tensor:
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, RuntimeError, ValueError):
        raise ArgumentTypeError(
            f"{what}: labels must be a 1-D integer tensor, array or list, got {type(labels).__name__}"
        ) from None
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or labels.ndim != 1:
        hint = (
            "; for one-hot labels pass labels.argmax(1)"
            if labels.ndim == 2
            else "; convert whole-number labels with labels.long()"
            if labels.is_floating_point()
            else ""
        )
        raise ShapeError(
            f"labels must be a 1-D integer tensor of class numbers, got dtype {labels.dtype}, shape "
            f"{list(labels.shape)}{hint}"
        )
    if len(labels) != n or n == 0:
        raise ShapeError(
            f"{what} needs one label per example and at least one example; got {n} examples, {len(labels)} labels"
        )
    if int(labels.min()) < 0:
        bad = sorted(set(labels[labels < 0].tolist()))[:5]
        raise ShapeError(f"labels must be class numbers >= 0, got {bad}")
    if n_classes is not None and int(labels.max()) >= n_classes:
        bad = sorted(set(labels[labels >= n_classes].tolist()))[:5]
        raise ShapeError(
            f"{what}: labels must be class numbers below {n_classes} (the model's {n_classes} outputs), got {bad}"
        )
    return labels.long()


def check_examples(images: Any, labels: Any, what: str, n_classes: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """``(images, labels)`` as tensors, or the error that says what is wrong; the one check of labelled pairs.

    ``images``: a tensor, an array, or a list of equally shaped tensors or arrays. ``labels``: 1-D
    integer class numbers from 0 (below ``n_classes`` when given), one per image, at least one.
    """
    images = _as_images(images, what)
    if images.ndim == 0:
        raise ShapeError(f"{what}: images must have a batch dimension, got a scalar")
    return images, _labels(labels, len(images), what, n_classes)


def check_images(images: Tensor, what: str) -> Tensor:
    """``images`` if they are floating point and finite (the pixels a model takes), else the error saying so."""
    if not images.is_floating_point():
        raise InputDtypeError(
            f"{what} have dtype {images.dtype}; expected floating point (pixels in [0, 1]): convert with "
            "images.float() / 255"
        )
    if images.numel() == 0 or all(map(math.isfinite, torch.aminmax(images.detach()))):
        return images  # aminmax carries any NaN or infinity to its result, in a tenth of isfinite's time
    bad = ~torch.isfinite(images.reshape(len(images), -1)).all(1)
    if bool(bad.any()):
        raise UsageError(
            f"{what} contain NaN or infinite values (in {int(bad.sum())} of {len(images)} examples, the first at row "
            f"{int(bad.nonzero()[0, 0])}); drop or fix those rows"
        )
    return images


def as_labelled(data: Any) -> Labelled:
    """``data`` as a ``Labelled`` (unchanged if it is one)."""
    return data if isinstance(data, Labelled) else Labelled(data)


def default_data(model: Any, split: str = "train") -> Labelled:
    """MNIST's ``split`` for a model of MNIST's shape, 784 inputs and 10 outputs (its last hook point).

    Any other model must be given ``data=``. Warns once (``DataWarning``) unless
    ``model.meta["dataset"]`` is ``"mnist"``.
    """
    shape = tuple(getattr(model, "input_shape", None) or ())
    if math.prod(shape) != math.prod(MNIST_SHAPE) or shape not in (MNIST_SHAPE, (784,), (28, 28)):
        raise UsageError(
            f"class labels need labelled data: this model's input is {list(shape)}, not MNIST's "
            "[1, 28, 28]; pass data=(images, labels) or a labelled Dataset"
        )
    last = model.hook_names[-1]
    outputs = math.prod(facts.activation_shape(model, last))
    if outputs != MNIST_CLASSES:
        raise UsageError(
            f"class labels need labelled data: this model's output ({last}) has {outputs} classes, not "
            f"MNIST's {MNIST_CLASSES}; pass data=(images, labels) or a labelled Dataset"
        )
    if getattr(model, "meta", {}).get("dataset") != "mnist" and model not in _WARNED:
        warn(
            f"class labels are resolved through MNIST's {split} images, but this model does not record being "
            "trained on MNIST; pass data=(images, labels) for other data, or set model.meta['dataset'] = "
            "'mnist' to confirm",
            DataWarning,
        )
        _WARNED.add(model)
    return Labelled(load_mnist(split), name=f"MNIST {split}")
