"""The ``hookedmlp`` command line: ``reproduce``, ``grid``, ``sweep``, ``train``, ``hooks``.

User mistakes print one line on stderr and exit with status 2, never a traceback.
"""

import argparse
import dataclasses
import json
import math
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

__all__ = ["main", "build_parser"]


class _CliError(Exception):
    """Flags that contradict each other."""


def _checked(convert: Callable[..., Any], ok: Callable[..., bool], what: str, in_range: str = "") -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then check ``ok``; errors say expected vs got."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {in_range or what}, got {text}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_positive_float = _checked(float, lambda v: 0 < v < math.inf, "a positive number", "a positive finite number")
_seed = _checked(int, lambda v: 0 <= v < 2**63, "an integer seed", "a seed in [0, 2**63)")
_finite_float = _checked(float, math.isfinite, "a number", "a finite number")


def _digit(text: str) -> int:
    if text not in tuple("0123456789"):
        raise argparse.ArgumentTypeError(f"expected a digit 0-9, got {text!r}")
    return int(text)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hookedmlp`` command.

    Subcommands: ``train``, ``reproduce``, ``grid``, ``sweep`` and ``hooks``; run
    ``hookedmlp <command> --help`` for their flags. Bad flags exit with status 2 and
    a one-line message.

    Returns:
        The ``argparse.ArgumentParser``.

    Examples:
        >>> from hookedmlp.cli import build_parser
        >>> args = build_parser().parse_args(["sweep", "--a", "5", "--b", "6"])
        >>> args.command, args.a, args.b, args.method
        ('sweep', 5, 6, 'first')
    """
    parser = _Parser(prog="hookedmlp", description="Hook points, caching and steering for small MLPs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train the study's 784-512-512-10 MLP on MNIST")
    train.add_argument("--out", type=Path, default=Path("runs/mnist-mlp.pt"), help="checkpoint path (default: %(default)s)")
    train.add_argument("--epochs", type=_positive_int, default=6)
    train.add_argument("--batch-size", type=_positive_int, default=128)
    train.add_argument("--lr", type=_positive_float, default=1e-3)
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument("--data-root", type=Path, default=None, help="MNIST directory (default: $HOOKEDMLP_DATA or ~/.cache/hookedmlp/data)")
    train.add_argument("--card", action="store_true", help="also write <out>.json: seed, command, loss, accuracy, sha256")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    def add_model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint", type=Path, default=None, help="a HookedMLP checkpoint (default: the shipped mnist-mlp)")
        p.add_argument("--method", choices=("first", "mean"), default="first", help="exemplar: first training image (the study) or class mean")
        p.add_argument("--coeff", type=_finite_float, default=1.0, help="coefficient of the a - b vector (default: %(default)s)")
        p.add_argument("--figure", type=Path, default=None, help="also write this figure (stem; .html and .png are added)")
        p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")

    repro = sub.add_parser("reproduce", help="run the whole study; write docs/reproduction.md and docs/figures/")
    repro.add_argument("--out", type=Path, default=Path("docs"), help="output directory (default: %(default)s)")
    repro.add_argument("--checkpoint", type=Path, default=None, help="study this checkpoint instead of the shipped model")
    repro.add_argument("--train", action="store_true", help="train a fresh model first (about half a minute)")
    repro.add_argument("--quick", action="store_true", help="score on 1,000 test images only (a smoke test)")
    repro.add_argument("--no-figures", action="store_true", help="skip the figures")

    grid = sub.add_parser("grid", help="the 10 x 10 steering grid at one hook point")
    grid.add_argument("--hook", default="layer0.post", help="hook point (default: %(default)s)")
    grid.add_argument("--metric", choices=("loss", "flip_rate", "accuracy_other", "kl"), default="loss")
    add_model_args(grid)

    sweep = sub.add_parser("sweep", help="one a - b vector at every hook point (the study's layer sweep)")
    sweep.add_argument("--a", type=_digit, default=3, help="digit whose image is added (default: %(default)s)")
    sweep.add_argument("--b", type=_digit, default=1, help="digit whose image is subtracted (default: %(default)s)")
    add_model_args(sweep)

    hooks = sub.add_parser("hooks", help="list a model's hook points with their shapes")
    hooks.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint (default: the shipped mnist-mlp)")
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from hookedmlp.io import check_writable
    from hookedmlp.train import TrainSettings, train_model, write_card

    card_path = args.out.with_suffix(".json")
    if args.card and card_path == args.out:
        raise _CliError(f"--card would write the card over the checkpoint {str(args.out)!r}; use an --out not ending in .json")
    check_writable(args.out)
    if args.card:
        check_writable(card_path)
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    result = train_model(settings=settings, out=args.out, root=args.data_root, progress=not args.quiet, command=args.command_line)
    print(f"test loss {result.test_loss:.4f}, accuracy {result.test_accuracy:.4f}, {result.seconds:.1f} s -> {args.out}")
    if args.card:
        write_card(args.out, card_path)
    return 0


def _load_model(args: argparse.Namespace):
    import hookedmlp

    model = hookedmlp.load(args.checkpoint) if args.checkpoint else hookedmlp.HookedMLP.from_pretrained("mnist-mlp")
    return model.eval()


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from analysis.reproduce import reproduce

    if args.train and args.checkpoint:
        raise _CliError("--train and --checkpoint exclude each other; pick one")
    reproduce(out_dir=args.out, checkpoint=args.checkpoint, train=args.train, quick=args.quick,
              figures=not args.no_figures, progress=sys.stderr.isatty())
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    from analysis.grid import steering_grid

    model = _load_model(args)
    grid = steering_grid(model, hook=args.hook, coeff=args.coeff, method=args.method, progress=sys.stderr.isatty())
    print(grid.to_markdown(args.metric))
    print(repr(grid))
    if args.json:
        grid.save(args.json)
    if args.figure:
        from analysis.figures import grid_heatmap, write_figure
        from analysis.published import study_tables

        study = study_tables() if (args.hook, args.coeff, args.method, args.metric) == ("layer0.post", 1.0, "first", "loss") else None
        for path in write_figure(grid_heatmap(grid, study, metric=args.metric), args.figure):
            print(f"wrote {path}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    import dataclasses

    from analysis.sweep import layer_sweep

    if args.a == args.b:
        raise _CliError(f"--a and --b are both {args.a}: the vector would be zero; pick two different digits")
    model = _load_model(args)
    sweep = layer_sweep(model, args.a, args.b, coeff=args.coeff, method=args.method)
    print(sweep.to_markdown())
    if args.json:
        from hookedmlp.io import atomic_write

        with atomic_write(args.json, "w") as f:
            json.dump(sweep.to_dict(), f)
    if args.figure:
        from analysis.figures import layer_sweep_figure, write_figure
        from analysis.published import study_tables

        for path in write_figure(layer_sweep_figure(sweep, study_tables()), args.figure):
            print(f"wrote {path}")
    return 0


def _cmd_hooks(args: argparse.Namespace) -> int:
    rows = _load_model(args).hook_table()
    width = max(len(r[0]) for r in rows) + 2
    shape_width = max(len(r[1]) for r in rows) + 2
    for name, shape, what in rows:
        print(f"{name:<{width}}{shape:<{shape_width}}{what}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``hookedmlp`` console script; returns the exit status.

    User mistakes (``HookedMLPError``, contradictory flags, file errors) print one
    line on stderr and return 2; an interrupt returns 130.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on a user mistake, 130 on interrupt.

    Examples:
        >>> main(["hooks"])  # doctest: +ELLIPSIS
        layer0.pre   [batch, 784]  input of Linear(in_features=784, out_features=512, bias=True)
        layer0.post  [batch, 512]  output of Linear(in_features=784, out_features=512, bias=True)
        ...
        layer4.post  [batch, 10]   output of Linear(in_features=512, out_features=10, bias=True)
        0
    """
    from hookedmlp.errors import HookedMLPError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["hookedmlp", *argv])
    commands = {"train": _cmd_train, "hooks": _cmd_hooks, "reproduce": _cmd_reproduce, "grid": _cmd_grid, "sweep": _cmd_sweep}
    try:
        return commands[args.command](args)
    except (HookedMLPError, _CliError, OSError) as e:
        print(f"hookedmlp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hookedmlp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
