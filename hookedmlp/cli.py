"""The ``hookedmlp`` command line: ``train``, ``hooks`` (and the analysis commands).

User mistakes print one line on stderr and exit with status 2, never a traceback.
"""

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hookedmlp`` command."""
    parser = _Parser(prog="hookedmlp", description="Hook points, caching and steering for small MLPs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train the study's 784-512-512-10 MLP on MNIST")
    train.add_argument("--out", type=Path, default=Path("runs/mnist-mlp.pt"), help="checkpoint path (default: %(default)s)")
    train.add_argument("--epochs", type=_positive_int, default=6)
    train.add_argument("--batch-size", type=_positive_int, default=128)
    train.add_argument("--lr", type=_positive_float, default=1e-3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-root", type=Path, default=None, help="MNIST directory (default: $HOOKEDMLP_DATA or ~/.cache/hookedmlp/data)")
    train.add_argument("--card", action="store_true", help="also write <out>.json: seed, command, loss, accuracy, sha256")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    hooks = sub.add_parser("hooks", help="list a model's hook points with their shapes")
    hooks.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint (default: the shipped mnist-mlp)")
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from hookedmlp.checkpoint import sha256_file
    from hookedmlp.train import TrainSettings, train_mlp

    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    result = train_mlp(settings=settings, out=args.out, root=args.data_root, progress=not args.quiet)
    print(f"test loss {result.test_loss:.4f}, accuracy {result.test_accuracy:.4f}, {result.seconds:.1f} s -> {args.out}")
    if args.card:
        from hookedmlp.io import atomic_write

        card = {
            "name": args.out.stem,
            "architecture": "784-512-512-10, ReLU (the PyTorch quickstart MLP)",
            "settings": dataclasses.asdict(settings),
            "command": "hookedmlp " + " ".join(sys.argv[1:]) if sys.argv[1:] else "hookedmlp train",
            "test_loss": result.test_loss,
            "test_accuracy": result.test_accuracy,
            "sha256": sha256_file(args.out),
        }
        with atomic_write(args.out.with_suffix(".json"), "w") as f:
            json.dump(card, f, indent=2)
            f.write("\n")
    return 0


def _cmd_hooks(args: argparse.Namespace) -> int:
    import torch

    from hookedmlp.model import HookedMLP

    model = HookedMLP.load(args.checkpoint) if args.checkpoint else HookedMLP.from_pretrained("mnist-mlp")
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.zeros(1, model.d_in))
    for name in model.hook_names:
        layer = getattr(model, name.split(".")[0]).module
        print(f"{name:<14}{str(list(cache[name].shape)):<12}{'input of' if name.endswith('pre') else 'output of'} {layer}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``hookedmlp`` console script; returns the exit status."""
    from hookedmlp.errors import HookedMLPError

    args = build_parser().parse_args(argv)
    commands = {"train": _cmd_train, "hooks": _cmd_hooks}
    try:
        return commands[args.command](args)
    except (HookedMLPError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"hookedmlp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hookedmlp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
