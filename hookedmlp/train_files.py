"""What a training run writes, and the rule it follows: a file is replaced only by a good result.

``RunFiles.check`` inspects every target before training starts: the checkpoint ``out``, its
card, and ``<stem>.partial<suffix>`` beside ``out``, where each finished epoch goes. A partial
file that already exists (a previous run's last epoch, which an interrupt message pointed to)
is never overwritten: the run is refused until it is moved. ``out`` and the card are replaced
together at the end, with Ctrl-C held, and only when the final loss and every weight are
finite; an epoch goes to the partial file only under the same condition. An interrupted or
diverged run raises an error saying what was kept and where.
"""

import contextlib
import dataclasses
import json
import math
import os
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional, Union

import torch

from hookedmlp.checks import check_json
from hookedmlp.errors import CheckpointError, HookedMLPError, UsageError
from hookedmlp.files.atomic import atomic_write, check_writable
from hookedmlp.files.checkpoint import load_checkpoint, sha256_file
from hookedmlp.models.configs import config_from_dict

__all__ = ["RunFiles", "TrainingInterrupted", "TrainingDiverged", "partial_path", "write_card", "non_finite"]

PathLike = Union[str, "os.PathLike[str]"]


def partial_path(out: Path) -> Path:
    """Where a run writing ``out`` keeps its last finished epoch: ``m.pt`` -> ``m.partial.pt``."""
    return out.with_name(f"{out.stem}.partial{out.suffix or '.pt'}")


def non_finite(model: torch.nn.Module) -> int:
    """How many weights and buffers of ``model`` are NaN or infinite."""
    return sum(int((~torch.isfinite(t)).sum()) for t in model.state_dict().values() if t.is_floating_point())


def _is_stream(path: Path) -> bool:
    """``-`` (standard output), or an existing FIFO or device: written in place, never read back."""
    if str(path) == "-":
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode) and not stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _files_said(files: "RunFiles") -> str:
    pairs = [(str(p), e) for p, e in zip((files.out, files.card), files.existed) if p is not None]
    kept, new = [p for p, e in pairs if e], [p for p, e in pairs if not e]
    said = [f"{' and '.join(kept)} kept as {'it was' if len(kept) == 1 else 'they were'}"] if kept else []
    said += [f"{' and '.join(new)} not written"] if new else []
    return ", ".join(said) or "nothing was written"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: ``out`` and ``card`` were left as they were; ``partial`` holds epoch ``saved``."""

    def __init__(self, epochs_done: int, epochs: int, files: "RunFiles") -> None:
        super().__init__(epochs_done, epochs)
        self.epochs_done, self.epochs, self.files = epochs_done, epochs, files
        self.out, self.partial, self.card, self.saved = files.out, files.partial, files.card, files.saved

    def __str__(self) -> str:
        part = f"; epoch {self.saved} is in {self.partial}" if self.partial is not None and self.saved else ""
        return f"interrupted after {self.epochs_done} of {self.epochs} epochs: {_files_said(self.files)}{part}"


class TrainingDiverged(HookedMLPError, FloatingPointError):
    """The test loss or a weight became NaN or infinite: nothing was replaced; ``result`` holds the diverged run."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


@dataclasses.dataclass
class RunFiles:
    """Where one run writes (``None``: nowhere), whether each existed before, and the last epoch saved."""

    out: Optional[Path]
    card: Optional[Path]
    partial: Optional[Path]
    existed: tuple[bool, bool]
    saved: int = 0  # the last epoch the partial file holds (0: none)
    saved_loss: float = math.nan

    @classmethod
    def check(cls, out: Optional[PathLike], card: Optional[PathLike]) -> "RunFiles":
        """Every target checked before anything is computed: contradictions, a partial in the way, writability."""
        out_path = Path(out) if out is not None else None
        card_path = Path(card) if card is not None else None
        if card_path is not None and (out_path is None or os.path.realpath(card_path) == os.path.realpath(out_path)):
            raise UsageError(f"card {str(card_path)!r} needs a checkpoint path (out) other than itself")
        stream = out_path is not None and _is_stream(out_path)
        if card_path is not None and stream:
            raise UsageError(
                f"a card records the sha256 of the checkpoint file, which a stream ({str(out_path)!r}) cannot give "
                "back; write the checkpoint to a file, or drop the card"
            )
        partial = partial_path(out_path) if out_path is not None and not stream else None
        if partial is not None and (partial.exists() or partial.is_symlink()):
            raise UsageError(
                f"{partial} already exists (an earlier run's last finished epoch, or something else): this run would "
                "write its epochs there; move or delete it first, or choose another checkpoint path"
            )
        for path in (out_path, card_path, partial):
            if path is not None:
                check_writable(path)
        existed = (out_path is not None and out_path.exists(), card_path is not None and card_path.exists())
        return cls(out_path, card_path, partial, existed)

    def save_epoch(self, model: Any, meta: dict[str, Any], epoch: int, test_loss: float) -> None:
        """Write a finished, finite epoch to the partial file (no partial file: nothing)."""
        if self.partial is not None:
            model.save(self.partial, meta=meta)
            self.saved, self.saved_loss = epoch, test_loss

    def finish(self, model: Any) -> None:
        """Replace ``out``, then the card, Ctrl-C held so they never describe different runs; drop the partial."""
        if self.out is None:
            return
        with _interrupts_deferred():
            model.save(self.out)
            if self.card is not None:
                write_card(self.out, self.card)
            if self.partial is not None and self.partial.exists():
                self.partial.unlink()

    def diverged(self, why: str, epoch: int, epochs: int, lr: float, result: Any) -> TrainingDiverged:
        """The error for a run that went NaN or infinite at ``epoch``, saying what was kept and where."""
        kept = (
            f"; epoch {self.saved} (test loss {self.saved_loss:.4f}) is in {self.partial}"
            if self.partial is not None and self.saved
            else ""
        )
        return TrainingDiverged(
            f"training diverged in epoch {epoch} of {epochs} ({why}): {_files_said(self)}{kept}; lower the learning "
            f"rate (lr={lr:g}) or check the data",
            result,
        )


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


def write_card(checkpoint: PathLike, card: PathLike) -> dict[str, Any]:
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
