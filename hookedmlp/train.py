"""Seeded training on MNIST (or given tensors), with checkpoints that are replaced only by a good, finished run.

The data are held as whole tensors and batches drawn by index, never item by item. The
defaults train the study's quickstart network (784-512-512-10, ReLU, pixels in [0, 1] as
``ToTensor`` gives them) to about 0.055 mean test cross-entropy in six epochs. Every recipe
in ``hookedmlp.models.configs`` trains the same way. What a run writes, and when, is
``hookedmlp.train_files``' rule.

Reproducibility: the weights are a function of the recipe, the settings (seed and
``threads`` included), the data, the torch build and the CPU's kernels. Training runs with
``settings.threads`` intra-op threads (default 1) whatever the machine or the caller set, so
the number of cores does not change a bit; the CPU's vector instructions (torch's
``get_cpu_capability()``: AVX2, AVX512...) and the BLAS kernels chosen for that CPU still do,
so another kind of machine can differ in the last bits. ``meta["platform"]`` records them.
"""

import contextlib
import dataclasses
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from hookedmlp.checks import check_int, check_number
from hookedmlp.data.labelled import check_examples, check_images
from hookedmlp.data.mnist import load_mnist
from hookedmlp.errors import ArgumentTypeError, InputDtypeError, ShapeError, UsageError
from hookedmlp.hooks.root import HookedRoot
from hookedmlp.models.chain import HookedMLP
from hookedmlp.models.configs import MLPConfig, Recipe, ResidualConfig, config_to_dict
from hookedmlp.models.residual import ResidualMLP
from hookedmlp.sizes import check_bytes, recipe_bytes
from hookedmlp.train_files import RunFiles, TrainingDiverged, TrainingInterrupted, non_finite, write_card

__all__ = [
    "TrainSettings",
    "TrainResult",
    "TrainingInterrupted",
    "TrainingDiverged",
    "train_model",
    "build_model",
    "evaluate",
    "write_card",
    "platform",
]


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """AdamW with cosine decay to zero; ``seed`` seeds the initial weights, dropout and the batch order.

    ``threads`` is the number of intra-op threads training runs with: the weights depend on it
    (BLAS and torch split sums by thread), so it is a setting, recorded with the others.
    ``target_loss`` stops training at the first check (every ``check_every`` steps) where the test
    loss is at most it: models of different architectures trained to one test loss. The cosine
    schedule still spans ``epochs``; a run that never reaches the target trains them all.
    """

    epochs: int = 6
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 1
    target_loss: Optional[float] = None
    check_every: int = 50

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
        check_int(self.threads, "threads", low=1)
        if self.target_loss is not None:
            check_number(self.target_loss, "target_loss", 0.0, low_open=True)
        check_int(self.check_every, "check_every", low=1)


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


def _plain(model: HookedRoot) -> torch.nn.Module:
    """The bare modules to train (sharing the model's parameters): no hook point costs a call per step."""
    return model.to_sequential() if isinstance(model, HookedMLP) else model


def platform() -> dict[str, Any]:
    """What the bits of a training run depend on besides its settings: torch's build and the CPU's kernels."""
    return {
        "torch": str(torch.__version__),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": "mkl" if torch.backends.mkl.is_available() else "other",
    }


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (process-wide, as torch's setting is), restoring the caller's."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _given_data(data: Any, recipe: Recipe) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``data`` checked as training and test examples for ``recipe``, with the labelled API's one check."""
    if not isinstance(data, (tuple, list)) or len(data) != 4:
        got = f"a {type(data).__name__} of {len(data)}" if isinstance(data, (tuple, list)) else type(data).__name__
        raise ArgumentTypeError(f"data must be (train_x, train_y, test_x, test_y), got {got}")
    train_x, train_y = check_examples(data[0], data[1], "training data", n_classes=recipe.d_out)
    test_x, test_y = check_examples(data[2], data[3], "test data", n_classes=recipe.d_out)
    return check_images(train_x, "training images"), train_y, check_images(test_x, "test images"), test_y


def _fitted(model: HookedRoot, x: Tensor, what: str) -> Tensor:
    """``x`` in the shape the model's bare modules take, or the model's shape error naming ``what``."""
    try:
        return model.prepare_input(x)
    except (ShapeError, InputDtypeError) as e:
        raise type(e)(f"{what}: {e}") from None


def train_model(
    recipe: Optional[Recipe] = None,
    settings: Optional[TrainSettings] = None,
    *,
    out: Union[str, "os.PathLike[str]", None] = None,
    card: Union[str, "os.PathLike[str]", None] = None,
    data: Any = None,
    root: Union[str, "os.PathLike[str]", None] = None,
    device: Union[str, torch.device] = "cpu",
    progress: bool = True,
    command: Optional[str] = None,
) -> TrainResult:
    """Train a seeded model of ``recipe`` on MNIST (or ``data``) and optionally save it to ``out``.

    Everything is checked before training starts: ``data`` (shapes, integer labels below the
    recipe's ``d_out``, finite images), the memory the run needs (``hookedmlp.sizes``), and
    every file it will write. Each finished epoch goes to ``<stem>.partial<suffix>`` beside
    ``out`` (refused if that file exists: it may be an interrupted run's last epoch); ``out``
    and ``card`` are replaced together at the end, only if the final loss and weights are
    finite, and the partial file is then removed. On Ctrl-C, ``TrainingInterrupted`` says what
    was kept; on NaN or infinity, ``TrainingDiverged`` does (with the diverged run as its
    ``result``) and nothing is replaced.

    The same recipe, settings, data and torch build give the same weights, bit for bit, on
    any machine whose CPU has the same kernels (``platform()``, recorded in ``meta``), however
    many cores it has: training runs with ``settings.threads`` intra-op threads.

    Args:
        recipe: the architecture (default: the study's 784-512-512-10 ReLU net).
        settings: optimiser settings, seed and threads.
        out: checkpoint path (its ``meta`` records the recipe, settings, data, command, platform and metrics).
        card: also write the JSON card of ``out`` here (see ``write_card``).
        data: ``(train_x, train_y, test_x, test_y)`` instead of MNIST: tensors, arrays or lists.
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
    files = RunFiles.check(out, card)
    check_bytes(
        recipe_bytes(recipe, settings.batch_size, training=True),
        f"training a {recipe.summary} in batches of {settings.batch_size}",
        "use a smaller recipe or batch size",
    )
    data, dataset = training_data(recipe, data, root)
    run = Run(recipe, settings, files, command, dataset)
    with threads(settings.threads):
        model, seconds = _train(run, data, device, progress)
    model.meta = run.meta()
    files.finish(model)
    return run.result(model, seconds)


def training_data(recipe: Recipe, data: Any, root: Any) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], str]:
    """MNIST's training and test sets (``data is None``), or ``data`` checked for ``recipe``; and its name."""
    if data is None:
        return (*load_mnist("train", root=root), *load_mnist("test", root=root)), "mnist"
    return _given_data(data, recipe), "given tensors"


@dataclasses.dataclass
class Run:
    """One seed's run: what it records (``meta``), its history, and what happens at the end of each epoch."""

    recipe: Recipe
    settings: TrainSettings
    files: RunFiles
    command: Optional[str]
    dataset: str
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # more ``meta`` (how the seeds were trained)

    def end_epoch(
        self, model: HookedRoot, last_loss: Tensor, test: tuple[Tensor, Tensor], seconds: float, last: bool = False
    ) -> None:
        """Evaluate, record, stop on NaN or infinity, and keep the epoch in the partial file (not after the last:
        the run's final epoch, or one ``last`` because it reached the target loss)."""
        epoch = len(self.history) + 1
        test_loss, test_acc = evaluate(model, *test)
        self.history.append(
            {
                "epoch": epoch,
                "train_loss_last_batch": last_loss.item(),
                "test_loss": test_loss,
                "test_accuracy": test_acc,
            }
        )
        _check_finite(model, self.history, self.settings, self.files, seconds)
        if epoch < self.settings.epochs and not last:
            self.files.save_epoch(model, self.meta(), epoch, test_loss)

    def meta(self) -> dict[str, Any]:
        return _meta(self.recipe, self.settings, self.history, self.command, self.dataset) | self.extra

    def result(self, model: HookedRoot, seconds: float) -> "TrainResult":
        last = self.history[-1]
        return TrainResult(model, last["test_loss"], last["test_accuracy"], self.history, seconds)


def seeded_model(recipe: Recipe, seed: int, device: Union[str, torch.device]) -> HookedRoot:
    """A fresh model of ``recipe`` initialised from ``seed`` (the global RNG is seeded with it), on ``device``."""
    torch.manual_seed(seed)
    return build_model(recipe).to(device)


def on_device(model: HookedRoot, data: tuple[Tensor, ...], device: Union[str, torch.device]) -> tuple[Tensor, ...]:
    """The data moved to ``device`` once, its images in the shape the model's bare modules take."""
    train_x, train_y, test_x, test_y = (t.to(device) for t in data)
    # the shape the bare modules take (LeNet: [N, 1, 28, 28])
    return _fitted(model, train_x, "training images"), train_y, _fitted(model, test_x, "test images"), test_y


def optimiser(params: Any, settings: TrainSettings, n: int) -> tuple[torch.optim.Optimizer, Any]:
    """Fused AdamW and its cosine schedule over every step of the run (``n`` training examples)."""
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=True)
    steps = settings.epochs * ((n + settings.batch_size - 1) // settings.batch_size)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)


def _train(
    run: Run, data: tuple[Tensor, Tensor, Tensor, Tensor], device: Union[str, torch.device], progress: bool
) -> tuple[HookedRoot, float]:
    """The seeded loop: the trained model (in eval mode) and the seconds it took; ``run`` holds its history."""
    settings = run.settings
    model = seeded_model(run.recipe, settings.seed, device)
    net = _plain(model)
    train_x, train_y, test_x, test_y = on_device(model, data, device)
    gen = torch.Generator().manual_seed(settings.seed)
    opt, sched = optimiser(model.parameters(), settings, len(train_x))
    n, bs = len(train_x), settings.batch_size
    start = time.perf_counter()
    bar = tqdm(total=sched.T_max, desc="train", unit="step", disable=not progress)
    reached, step = False, 0
    try:
        for _ in range(settings.epochs):
            model.train()
            order = torch.randperm(n, generator=gen).to(device)
            for i in range(0, n, bs):
                idx = order[i : i + bs]
                # index_select: a third of advanced indexing's time for the same rows
                loss = F.cross_entropy(net(train_x.index_select(0, idx)), train_y.index_select(0, idx))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                step += 1
                if reached_target(model, settings, step, (test_x, test_y)):
                    reached = True
                    break
            run.end_epoch(model, loss, (test_x, test_y), time.perf_counter() - start, last=reached)
            if reached:
                break
            bar.set_postfix(
                test_loss=f"{run.history[-1]['test_loss']:.4f}", acc=f"{run.history[-1]['test_accuracy']:.4f}"
            )
    except KeyboardInterrupt:
        raise TrainingInterrupted(len(run.history), settings.epochs, run.files) from None
    finally:
        bar.close()
    return model.eval(), time.perf_counter() - start


def reached_target(model: HookedRoot, settings: TrainSettings, step: int, test: tuple[Tensor, Tensor]) -> bool:
    """Whether a run with a ``target_loss`` stops after ``step`` steps: at a check, the test loss is at most it."""
    if settings.target_loss is None or step % settings.check_every:
        return False
    return evaluate(model, *test)[0] <= settings.target_loss


def _check_finite(
    model: HookedRoot, history: list[dict[str, float]], settings: TrainSettings, files: RunFiles, seconds: float
) -> None:
    """``TrainingDiverged`` once the test loss or any weight is NaN or infinite: nothing of it is ever saved."""
    last = history[-1]
    bad = non_finite(model)
    if math.isfinite(last["test_loss"]) and not bad:
        return
    why = f"test loss {last['test_loss']}" + (f", {bad} weights NaN or infinite" if bad else "")
    result = TrainResult(model.eval(), last["test_loss"], last["test_accuracy"], history, seconds)
    raise files.diverged(why, int(last["epoch"]), settings.epochs, settings.lr, result)


def _meta(
    recipe: Recipe, settings: TrainSettings, history: list[dict[str, float]], command: Optional[str], dataset: str
) -> dict[str, Any]:
    return {
        "recipe": config_to_dict(recipe),
        "settings": dataclasses.asdict(settings),
        "dataset": dataset,
        "command": command or shlex.join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "torch": str(torch.__version__),
        "platform": platform(),
        "history": history,
        "test_loss": history[-1]["test_loss"],
        "test_accuracy": history[-1]["test_accuracy"],
    }
