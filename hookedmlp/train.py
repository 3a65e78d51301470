"""Seeded training on MNIST (or given tensors), with checkpoints that are replaced only by a finished run.

The data are held as whole tensors and batches drawn by index, never item by item. The
defaults train the study's quickstart network (784-512-512-10, ReLU, pixels in [0, 1] as
``ToTensor`` gives them) to about 0.055 mean test cross-entropy in six epochs. Every recipe
in ``hookedmlp.models.configs`` trains the same way.
"""

import contextlib
import dataclasses
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from hookedmlp.checks import check_int, check_json, check_number
from hookedmlp.data.mnist import load_mnist
from hookedmlp.errors import CheckpointError, UsageError
from hookedmlp.files.atomic import atomic_write, check_writable
from hookedmlp.files.checkpoint import load_checkpoint, sha256_file
from hookedmlp.hooks.root import HookedRoot
from hookedmlp.models.chain import HookedMLP
from hookedmlp.models.configs import MLPConfig, Recipe, ResidualConfig, config_from_dict, config_to_dict
from hookedmlp.models.residual import ResidualMLP

__all__ = [
    "TrainSettings",
    "TrainResult",
    "TrainingInterrupted",
    "train_model",
    "build_model",
    "evaluate",
    "write_card",
]


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """AdamW with cosine decay to zero; ``seed`` seeds the initial weights, dropout and the batch order."""

    epochs: int = 6
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", low=1)
        check_int(self.batch_size, "batch_size", low=1)
        check_number(self.lr, "lr", 0.0, 10.0, low_open=True)
        check_number(self.weight_decay, "weight_decay", 0.0, 1e4)
        if self.lr * self.weight_decay >= 1:
            raise UsageError(
                f"lr * weight_decay must be below 1 (AdamW scales weights by 1 - lr * weight_decay each "
                f"step), got {self.lr} * {self.weight_decay}"
            )
        check_int(self.seed, "seed", low=0, high=2**63)


@dataclasses.dataclass
class TrainResult:
    """The trained model (in eval mode), its final test metrics, the per-epoch history and the wall time."""

    model: HookedRoot
    test_loss: float
    test_accuracy: float
    history: list[dict[str, float]]
    seconds: float

    def __repr__(self) -> str:
        return (
            f"TrainResult(test_loss={self.test_loss:.4f}, test_accuracy={self.test_accuracy:.4f}, "
            f"epochs={len(self.history)}, seconds={self.seconds:.1f})"
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: ``out`` and ``card`` were left as they were; ``partial`` holds epoch ``saved``."""

    def __init__(
        self,
        epochs_done: int,
        epochs: int,
        out: Optional[Path],
        partial: Optional[Path],
        card: Optional[Path] = None,
        existed: tuple[bool, bool] = (False, False),
        saved: int = 0,
    ) -> None:
        super().__init__(epochs_done, epochs)
        self.epochs_done, self.epochs, self.out, self.partial, self.card = epochs_done, epochs, out, partial, card
        self.existed, self.saved = existed, saved

    def __str__(self) -> str:
        files = [(str(p), e) for p, e in zip((self.out, self.card), self.existed) if p is not None]
        kept, new = [p for p, e in files if e], [p for p, e in files if not e]
        said = [f"{' and '.join(kept)} kept as {'it was' if len(kept) == 1 else 'they were'}"] if kept else []
        said += [f"{' and '.join(new)} not written"] if new else []
        part = f"; epoch {self.saved} is in {self.partial}" if self.partial is not None and self.saved else ""
        written = ", ".join(said) or "nothing was written"
        return f"interrupted after {self.epochs_done} of {self.epochs} epochs: {written}{part}"


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[list[int]]:
    """Hold Ctrl-C while the checkpoint and its card are replaced, so they never describe different runs.

    Only the main thread can install signal handlers; elsewhere this does nothing. A
    Ctrl-C held here is dropped: the run has finished and its files are complete.
    """
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous)


def build_model(recipe: Optional[Recipe] = None) -> HookedRoot:
    """A fresh model for a recipe: ``ResidualMLP`` for a ``ResidualConfig``, else ``HookedMLP``."""
    recipe = MLPConfig() if recipe is None else recipe
    return ResidualMLP(recipe) if isinstance(recipe, ResidualConfig) else HookedMLP(recipe)


@torch.no_grad()
def evaluate(
    model: HookedRoot,
    images: Float[Tensor, "batch *example"],  # noqa: F821 (a jaxtyping shape)
    labels: Int[Tensor, " batch"],
    batch_size: int = 10_000,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode (the model's mode is restored afterwards)."""
    if len(images) == 0 or len(images) != len(labels):
        raise UsageError(
            f"evaluate needs a non-empty set with one label per image; got {len(images)} images and "
            f"{len(labels)} labels"
        )
    was_training = model.training
    model.eval()
    total, correct = 0.0, 0
    try:
        for i in range(0, len(images), batch_size):
            logits = model(images[i : i + batch_size])
            y = labels[i : i + batch_size]
            total += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(-1) == y).sum())
    finally:
        model.train(was_training)
    return total / len(images), correct / len(images)


def _partial_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.partial{out.suffix or '.pt'}")


def _plain(model: HookedRoot) -> torch.nn.Module:
    """The bare modules to train (sharing the model's parameters): no hook point costs a call per step."""
    return model.to_sequential() if isinstance(model, HookedMLP) else model


def _same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def train_model(
    recipe: Optional[Recipe] = None,
    settings: Optional[TrainSettings] = None,
    *,
    out: Union[str, "os.PathLike[str]", None] = None,
    card: Union[str, "os.PathLike[str]", None] = None,
    data: Optional[tuple[Tensor, Tensor, Tensor, Tensor]] = None,
    root: Union[str, "os.PathLike[str]", None] = None,
    device: Union[str, torch.device] = "cpu",
    progress: bool = True,
    command: Optional[str] = None,
) -> TrainResult:
    """Train a seeded model of ``recipe`` on MNIST (or ``data``) and optionally save it to ``out``.

    ``out`` (and ``card``) are checked to be writable before training starts and written only
    when training completes, together (Ctrl-C is held while they are replaced); each finished
    epoch goes to ``<stem>.partial<suffix>`` beside ``out``, removed at the end. On Ctrl-C,
    ``TrainingInterrupted`` says what was kept. The same seed gives the same weights, bit for
    bit, on one machine with the same number of threads.

    Args:
        recipe: the architecture (default: the study's 784-512-512-10 ReLU net).
        settings: optimiser settings and seed.
        out: checkpoint path (its ``meta`` records the recipe, settings, data, command and metrics).
        card: also write the JSON card of ``out`` here (see ``write_card``).
        data: ``(train_x, train_y, test_x, test_y)`` instead of MNIST.
        root: MNIST directory (see ``hookedmlp.data.prepare_mnist``).
        device: where to train.
        progress: show a progress bar.
        command: the command line to record (default: ``sys.argv``).

    Examples:
        >>> x, y = torch.rand(8, 4), torch.arange(8) % 2
        >>> result = train_model(MLPConfig(d_in=4, d_hidden=(3,), d_out=2), TrainSettings(epochs=2, batch_size=4),
        ...                      data=(x, y, x, y), progress=False)
        >>> len(result.history)
        2
    """
    recipe = MLPConfig() if recipe is None else recipe
    settings = settings or TrainSettings()
    out_path = Path(out) if out is not None else None
    card_path = Path(card) if card is not None else None
    if card_path is not None and (out_path is None or _same_path(card_path, out_path)):
        raise UsageError(f"card {str(card_path)!r} needs a checkpoint path (out) other than itself")
    for path in (out_path, card_path):
        if path is not None:
            check_writable(path)
    existed = (out_path is not None and out_path.exists(), card_path is not None and card_path.exists())
    dataset = "mnist" if data is None else "given tensors"
    if data is None:
        data = (*load_mnist("train", root=root), *load_mnist("test", root=root))
    train_x, train_y, test_x, test_y = (t.to(device) for t in data)
    torch.manual_seed(settings.seed)
    model = build_model(recipe).to(device)
    net = _plain(model)
    train_x = model.prepare_input(train_x)  # the shape the bare modules take (LeNet: [N, 1, 28, 28])
    gen = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=True)
    n, bs = len(train_x), settings.batch_size
    steps = settings.epochs * ((n + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    history: list[dict[str, float]] = []
    partial = _partial_path(out_path) if out_path is not None else None
    saved = 0  # the last epoch the partial file holds
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="train", unit="step", disable=not progress)
    try:
        for epoch in range(settings.epochs):
            model.train()
            order = torch.randperm(n, generator=gen).to(device)
            for i in range(0, n, bs):
                idx = order[i : i + bs]
                loss = F.cross_entropy(net(train_x[idx]), train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
            test_loss, test_acc = evaluate(model, test_x, test_y)
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss_last_batch": loss.item(),
                    "test_loss": test_loss,
                    "test_accuracy": test_acc,
                }
            )
            bar.set_postfix(test_loss=f"{test_loss:.4f}", acc=f"{test_acc:.4f}")
            if partial is not None and epoch + 1 < settings.epochs:
                model.save(partial, meta=_meta(recipe, settings, history, command, dataset))
                saved = epoch + 1
    except KeyboardInterrupt:
        raise TrainingInterrupted(len(history), settings.epochs, out_path, partial, card_path, existed, saved) from None
    finally:
        bar.close()
    model.eval()
    model.meta = _meta(recipe, settings, history, command, dataset)
    if out_path is not None:
        with _interrupts_deferred():
            model.save(out_path)
            if card_path is not None:
                write_card(out_path, card_path)
            if partial is not None and partial.exists():
                partial.unlink()
    return TrainResult(
        model, history[-1]["test_loss"], history[-1]["test_accuracy"], history, time.perf_counter() - start
    )


def _meta(
    recipe: Recipe, settings: TrainSettings, history: list[dict[str, float]], command: Optional[str], dataset: str
) -> dict[str, Any]:
    return {
        "recipe": config_to_dict(recipe),
        "settings": dataclasses.asdict(settings),
        "dataset": dataset,
        "command": command or shlex.join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "torch": str(torch.__version__),
        "history": history,
        "test_loss": history[-1]["test_loss"],
        "test_accuracy": history[-1]["test_accuracy"],
    }


def write_card(checkpoint: Union[str, "os.PathLike[str]"], card: Union[str, "os.PathLike[str]"]) -> dict[str, Any]:
    """Write the JSON card of a trained checkpoint (recipe, settings, command, metrics, sha256) atomically."""
    meta = load_checkpoint(checkpoint).meta
    recipe = config_from_dict(meta.get("recipe"), f"{checkpoint} recipe")
    data = {
        "name": Path(checkpoint).stem,
        "architecture": recipe.summary if recipe is not None else None,
        "recipe": meta.get("recipe"),
        "settings": meta.get("settings"),
        "dataset": meta.get("dataset"),
        "command": meta.get("command"),
        "test_loss": meta.get("test_loss"),
        "test_accuracy": meta.get("test_accuracy"),
        "sha256": sha256_file(checkpoint),
    }
    check_json(data, "a card", CheckpointError)
    with atomic_write(card, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    return data
