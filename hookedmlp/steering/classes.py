"""The activations that stand for each class: its ``exemplar``-th example, or its mean over a data set (streamed)."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from hookedmlp.checks import check_choice, check_class, check_int
from hookedmlp.data.labelled import METHODS, as_labelled, default_data
from hookedmlp.errors import InputDtypeError, UsageError
from hookedmlp.models import facts

__all__ = ["class_activations"]


def _on_model(model: Any, images: Tensor, name: str) -> Tensor:
    """``images`` as a checked batch on the model's device and floating dtype (integer pixels are refused)."""
    if not images.is_floating_point():
        raise InputDtypeError(
            f"images from {name} have dtype {images.dtype}; expected floating point (pixels in "
            "[0, 1]): convert with images.float() / 255"
        )
    if not bool(torch.isfinite(images).all()):
        raise UsageError(f"images from {name} contain NaN or infinite values; a class contrast needs finite inputs")
    ref = facts.reference_tensor(model)
    return facts.prepare_input(model, images.to(ref.device, ref.dtype) if ref is not None else images)


def class_activations(
    model: Any,
    classes: Sequence[int],
    hooks: Sequence[str],
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
    batch_size: int = 10_000,
) -> tuple[dict[str, Tensor], list[int], str]:
    """Activations standing for each class at ``hooks``, from passes where no hook runs.

    Args:
        model: the hooked model.
        classes: class labels of ``data``.
        hooks: hook names.
        method: ``"first"`` (each class's ``exemplar``-th example) or ``"mean"`` (its mean,
            streamed ``batch_size`` examples at a time: memory is one batch of activations).
        exemplar: which example ``"first"`` takes, counting from 0.
        data: ``(images, labels)``, a labelled ``Dataset`` or a ``Labelled``; default MNIST's
            training set, for MNIST-shaped models only.
        batch_size: examples per pass for ``"mean"``.

    Returns:
        ``({hook: [len(classes), *shape]}, examples per class, the data's name)``.

    Examples:
        >>> acts, counts, name = class_activations(model, [3, 1], ["layer0.post"], method="mean")
        >>> acts["layer0.post"].shape, counts, name
        (torch.Size([2, 512]), [6131, 6742], 'MNIST train')
    """
    method = check_choice(method, METHODS, "method")
    check_int(exemplar, "exemplar", low=0)
    if method == "mean" and exemplar:
        raise UsageError(
            f"exemplar={exemplar} picks one example per class, which method='mean' does not use; "
            "pass method='first' or drop exemplar"
        )
    check_int(batch_size, "batch_size", low=1)
    source = as_labelled(data) if data is not None else default_data(model)
    classes = [check_class(c, source.n_classes, f"class (of {source.name})") for c in classes]
    if method == "first":
        images = torch.cat([source.exemplar(c, exemplar)[0] for c in classes])
        acts = facts.clean_activations(model, _on_model(model, images, source.name), hooks)
        return acts, [1] * len(classes), source.name
    wanted = torch.tensor(classes)
    sums: dict[str, Tensor] = {}
    counts = torch.zeros(len(classes), dtype=torch.long)
    for images, labels in source.batches(classes, batch_size):
        batch = _on_model(model, images, source.name)
        onehot = labels.unsqueeze(1) == wanted
        counts += onehot.sum(0)
        for k, v in facts.clean_activations(model, batch, hooks).items():
            part = torch.einsum("nc,n...->c...", onehot.to(v.device, v.dtype), v)
            sums[k] = sums[k] + part if k in sums else part
    empty = [c for c, n in zip(classes, counts.tolist()) if n == 0]
    if empty:
        raise UsageError(f"{source.name} has no example of class(es) {empty}; the class mean is undefined")
    return (
        {k: s / counts.to(s.device, s.dtype).view(-1, *[1] * (s.ndim - 1)) for k, s in sums.items()},
        counts.tolist(),
        source.name,
    )
