"""The ``hookedmlp`` command's arguments: every flag with its help text and default; no torch import.

The choices of ``--activation``, ``--norm`` and ``--metric`` mirror ``hookedmlp.models.configs`` and
``analysis.metrics`` (written out here so that ``--help`` need not import torch;
tests/test_cli.py checks that they agree).
"""

import argparse
import importlib.metadata
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "build_parser",
    "parse_args",
    "version",
    "ACTIVATIONS",
    "NORMS",
    "ARCHS",
    "METRICS",
    "FIGURE_FORMATS",
    "VARIANTS",
    "PATCH_METRICS",
    "PATCH_PER",
    "DIRECTIONS",
    "ATTRIBUTIONS",
    "N_TEST",
    "DEVICES",
    "EXECUTORS",
]

ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "silu", "elu", "softplus", "leaky_relu", "identity")
NORMS = ("none", "layernorm", "batchnorm")
ARCHS = ("mlp", "lenet", "residual")
METRICS = {  # name: what it measures (analysis.metrics.METRICS' titles)
    "loss": "mean cross-entropy on the test set without digit b",
    "flip_rate": "share of the test images of b classified as a",
    "accuracy_other": "accuracy on the test images of the other digits",
    "kl": "mean KL(unsteered || steered) on the other digits",
    "collateral": "share of the test images of the other digits whose prediction changes",
}
FIGURE_FORMATS = ("html", "png", "svg")
DEVICES = ("auto", "cpu", "cuda")  # hookedmlp.devices.DEVICES (cuda:N too)
EXECUTORS = ("serial", "process", "ray")  # analysis.executors.EXECUTORS
PATCH_METRICS = {  # name: what it measures (hookedmlp.patching.METRICS)
    "logit_diff": "mean of logit(clean digit) - logit(corrupt digit)",
    "loss": "mean cross-entropy of the clean digit",
    "flip_rate": "share of pairs read as the clean digit",
}
PATCH_PER = ("hook", "unit", "position")  # hookedmlp.patching.PER
DIRECTIONS = ("denoise", "noise")  # hookedmlp.patching.DIRECTIONS
ATTRIBUTIONS = ("none", "gradient", "integrated_gradients")  # "none", then hookedmlp.patching.METHODS
N_TEST = 10_000  # MNIST's test images
VARIANTS = (
    "baseline",
    "depth-1",
    "depth-4",
    "width-64",
    "width-2048",
    "gelu",
    "tanh",
    "silu",
    "dropout",
    "weight-decay",
    "layernorm",
    "residual",
    "lenet",
)  # analysis.family.VARIANTS' slugs


def version() -> str:
    """The installed hookedmlp's version (its package metadata, read without importing it)."""
    return importlib.metadata.version("hookedmlp")


def _checked(
    convert: Callable[[str], Any], ok: Callable[[Any], bool], what: str, in_range: str = ""
) -> Callable[[str], Any]:
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
_count = _checked(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _checked(float, lambda v: 0 < v < math.inf, "a positive number", "a positive finite number")
_non_negative = _checked(float, lambda v: 0 <= v < math.inf, "a number", "a finite number >= 0")
_probability = _checked(float, lambda v: 0 <= v < 1, "a number", "a number in [0, 1)")
_seed = _checked(int, lambda v: 0 <= v < 2**63, "an integer seed", "a seed in [0, 2**63)")
_finite_float = _checked(float, math.isfinite, "a number", "a finite number")
_n_test = _checked(
    int, lambda v: 1 <= v <= N_TEST, "a number of test images", f"a number of test images, 1 to {N_TEST}"
)


def _device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether this machine has it is checked when the command runs)."""
    kind, colon, index = text.partition(":")
    if kind not in DEVICES or (colon and (kind != "cuda" or not index.isdigit())):
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(DEVICES)} or cuda:N, got {text!r}")
    return text


def _threads(text: str) -> Any:
    """A positive count of threads, or ``auto``: the cores free when the command starts."""
    return text if text == "auto" else _positive_int(text)


def _add_device(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--device",
        type=_device,
        default="auto",
        metavar="{auto,cpu,cuda}",
        help=f"where {what} runs: cpu, cuda (or cuda:N), or auto, CUDA when this machine has it (default: %(default)s)",
    )


def _add_threads(p: argparse.ArgumentParser, default: str = "auto", why: str = "") -> None:
    p.add_argument(
        "--threads",
        type=_threads,
        default=default,
        help="intra-op threads: a count, or auto, the cores free when the command starts (a busy neighbour then "
        f"costs no more than its share); the last bits of the numbers depend on it{why} (default: %(default)s)",
    )


def _add_executor(p: Any, default: str, what: str, threads: bool = True) -> None:
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=default,
        help=f"where the {what} run: serial (this process), process (a pool of local processes), or ray (a local Ray "
        'instance, or the cluster at --ray-address; pip install -e ".[ray]") (default: %(default)s)',
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="local processes (process), or a local Ray instance's CPUs (ray) (default: this machine's cores)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="join the Ray cluster at host:port, or auto for the one this machine is part of (default: none, a "
        "local instance)",
    )
    if not threads:
        return  # the command's own --threads (auto) then applies
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help=f"intra-op threads of each of the {what}: the last bits of the numbers depend on it, so every executor "
        "gives the same numbers for the same count (default: %(default)s)",
    )


def _named_path(text: str) -> Path:
    """A path that is not empty: ``Path('')`` would silently mean the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory path, got an empty one; pass e.g. runs/study")
    return Path(text)


def _digit(text: str) -> int:
    if text not in tuple("0123456789"):
        raise argparse.ArgumentTypeError(f"expected a digit 0-9, got {text!r}")
    return int(text)


def _images(text: str) -> tuple[str, Any]:
    """``3`` (a digit: its first --pairs test images) or ``@42,57`` (test-image indices)."""
    if text in tuple("0123456789"):
        return ("digit", int(text))
    parts = text[1:].split(",") if text.startswith("@") else []
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected a digit 0-9 or test-image indices such as @42,57, got {text!r}")
    return ("images", [int(p) for p in parts])


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_train(sub: Any) -> None:
    train = sub.add_parser(
        "train",
        help="train a network on MNIST (default: the study's 784-512-512-10 MLP)",
        description="Train a seeded network on MNIST. The checkpoint (and its card) are written only "
        "when training completes; each finished epoch goes to <out stem>.partial.pt.",
    )
    arch = train.add_argument_group("architecture")
    arch.add_argument(
        "--arch",
        choices=ARCHS,
        default="mlp",
        help="mlp: Linear blocks (the study's); lenet: a LeNet-5-style CNN; residual: a residual MLP "
        "(default: %(default)s)",
    )
    arch.add_argument("--residual", action="store_true", help="short for --arch residual (default: off)")
    arch.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="+",
        default=None,
        metavar="WIDTH",
        help="hidden widths, one per hidden layer (default: 512 512 for mlp; 120 84 for lenet, which "
        "takes exactly two)",
    )
    arch.add_argument("--activation", choices=ACTIVATIONS, default="relu", help="activation (default: %(default)s)")
    arch.add_argument(
        "--dropout",
        type=_probability,
        default=None,
        help="dropout after each hidden activation, mlp only (default: 0, none)",
    )
    arch.add_argument(
        "--norm",
        choices=NORMS,
        default=None,
        help="normalisation: mlp puts it between each hidden Linear and its activation; residual takes "
        "none or layernorm (default: none for mlp, layernorm for residual)",
    )
    arch.add_argument(
        "--channels",
        type=_positive_int,
        nargs=2,
        default=None,
        metavar=("C1", "C2"),
        help="lenet's two convolution widths (default: 6 16)",
    )
    arch.add_argument("--d-model", type=_positive_int, default=None, help="residual stream width (default: 256)")
    arch.add_argument("--d-mlp", type=_positive_int, default=None, help="residual blocks' hidden width (default: 512)")
    arch.add_argument("--blocks", type=_positive_int, default=None, help="number of residual blocks (default: 2)")
    opt = train.add_argument_group("training")
    opt.add_argument(
        "--epochs", type=_positive_int, default=6, help="passes over the 60,000 training images (default: %(default)s)"
    )
    opt.add_argument("--batch-size", type=_positive_int, default=128, help="images per step (default: %(default)s)")
    opt.add_argument(
        "--lr",
        type=_positive_float,
        default=1e-3,
        help="AdamW's peak learning rate, decayed to 0 on a cosine, at most 10 (default: %(default)s)",
    )
    opt.add_argument(
        "--weight-decay",
        type=_non_negative,
        default=0.0,
        help="AdamW's decoupled weight decay; lr * weight decay must stay below 1 (default: %(default)s)",
    )
    opt.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seeds the initial weights, dropout and the batch order: the same seed and --threads give the "
        "same weights, bit for bit, on any machine with the same CPU kernels (docs/reliability.md) "
        "(default: %(default)s)",
    )
    opt.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="intra-op threads while training; the weights depend on it, so it is recorded with the "
        "settings (default: %(default)s)",
    )
    opt.add_argument(
        "--target-loss",
        type=_positive_float,
        default=None,
        metavar="LOSS",
        help="stop at the first check (every 50 steps) where the test loss is at most LOSS; the cosine schedule "
        "still spans --epochs (default: train every epoch)",
    )
    _add_device(opt, "training")
    files = train.add_argument_group("files")
    files.add_argument(
        "--out", type=Path, default=Path("runs/mnist-mlp.pt"), help="checkpoint path (default: %(default)s)"
    )
    files.add_argument(
        "--card",
        action="store_true",
        help="also write <out>.json: recipe, settings, command, test loss and accuracy, sha256 (default: off)",
    )
    files.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="MNIST directory (default: $HOOKEDMLP_DATA, else ~/.cache/hookedmlp/data)",
    )
    files.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="a checkpoint to study (default: the shipped mnist-mlp)"
    )
    p.add_argument(
        "--method",
        choices=("first", "mean"),
        default="first",
        help="exemplar of each digit: its first training image (the study's) or its class mean (default: %(default)s)",
    )
    p.add_argument(
        "--coeff", type=_finite_float, default=1.0, help="coefficient of the a - b vector (default: %(default)s)"
    )
    p.add_argument(
        "--figure",
        type=Path,
        default=None,
        help="also write a figure: a path ending in .html, .png or .svg writes that format; any other path "
        "is a stem for both STEM.html and STEM.png (default: none)",
    )
    p.add_argument(
        "--json", type=Path, default=None, help="also write the results as JSON; - prints them (default: none)"
    )
    _add_device(p, "the model and the test images")
    _add_threads(p)


def _add_patch(sub: Any) -> None:
    patch = sub.add_parser(
        "patch",
        help="activation patching: which hook points and units carry the difference between two inputs",
        description="Patch each hook point (or unit) from the clean run into the corrupt run (or back), pair by "
        "pair, and print the entries that move the metric most. Optionally estimate the same numbers by "
        "attribution patching and report how far the estimate is from the exact answer.",
    )
    patch.add_argument(
        "--clean",
        type=_images,
        default="3",
        help="a digit (its first --pairs test images) or test-image indices such as @42,57 (default: %(default)s)",
    )
    patch.add_argument(
        "--corrupt",
        type=_images,
        default="1",
        help="as --clean, paired with it image by image (default: %(default)s)",
    )
    patch.add_argument(
        "--metric",
        choices=tuple(PATCH_METRICS),
        default="logit_diff",
        help="what each patch is scored by: "
        + "; ".join(f"{k}: {v}" for k, v in PATCH_METRICS.items())
        + " (default: %(default)s)",
    )
    patch.add_argument("--pairs", type=_positive_int, default=1000, help="pairs of a digit (default: %(default)s)")
    patch.add_argument(
        "--hooks", nargs="+", default=None, metavar="HOOK", help="hook points or globs (default: every hook point)"
    )
    patch.add_argument(
        "--per",
        choices=PATCH_PER,
        default="unit",
        help="patch whole hook points, each unit, or each position (default: %(default)s)",
    )
    patch.add_argument(
        "--direction",
        choices=DIRECTIONS,
        default="denoise",
        help="denoise: run corrupt, patch in clean; noise: run clean, patch in corrupt (default: %(default)s)",
    )
    patch.add_argument(
        "--attribution",
        choices=ATTRIBUTIONS,
        default="none",
        help="also estimate the numbers from gradients and compare them with the exact ones (default: %(default)s)",
    )
    patch.add_argument(
        "--steps", type=_positive_int, default=16, help="integrated gradients' points (default: %(default)s)"
    )
    patch.add_argument("--top", type=_positive_int, default=10, help="entries to print (default: %(default)s)")
    patch.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint (default: the shipped mnist-mlp)")
    patch.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write the result as a safetensors file; with --attribution, the estimate beside it, "
        "as STEM-estimate.SUFFIX (default: none)",
    )
    patch.add_argument(
        "--figure",
        type=Path,
        default=None,
        help="also write STEM-map (hook x unit heatmap), STEM-hooks (per hook point) and, with --attribution, "
        "STEM-agreement (estimate against exact); a path ending in .html, .png or .svg writes that format, "
        "any other path both html and png (default: none)",
    )
    patch.add_argument(
        "--json", type=Path, default=None, help="also write the results as JSON; - prints them (default: none)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hookedmlp`` command.

    Subcommands: ``train``, ``reproduce``, ``study``, ``grid``, ``sweep``, ``patch`` and ``hooks``; run
    ``hookedmlp <command> --help`` for their flags. Bad flags exit with status 2 and
    a one-line message.

    Returns:
        The ``argparse.ArgumentParser``.

    Examples:
        >>> from hookedmlp_cli.parser import build_parser
        >>> args = build_parser().parse_args(["sweep", "--a", "5", "--b", "6"])
        >>> args.command, args.a, args.b, args.method
        ('sweep', 5, 6, 'first')
    """
    parser = _Parser(prog="hookedmlp", description="Hook points, caching and steering for small networks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)

    repro = sub.add_parser("reproduce", help="run the whole study; write docs/reproduction.md and docs/figures/")
    repro.add_argument("--out", type=Path, default=Path("docs"), help="output directory (default: %(default)s)")
    repro.add_argument(
        "--checkpoint", type=Path, default=None, help="study this checkpoint (default: the shipped mnist-mlp)"
    )
    repro.add_argument(
        "--train", action="store_true", help="train a fresh model first, about half a minute (default: off)"
    )
    repro.add_argument(
        "--quick", action="store_true", help="score on 1,000 test images only, a smoke test (default: off)"
    )
    repro.add_argument("--no-figures", action="store_true", help="skip the figures (default: write them)")
    run = repro.add_argument_group("where it runs")
    _add_executor(run, "serial", "spread runs", threads=False)
    # docs/ was written at 2 threads: the same count, however busy the machine, gives the same bits there
    _add_threads(run, "2", ", and docs/ was written at 2, so 2 leaves a clean checkout clean")
    _add_device(run, "the models and the analysis")
    repro.set_defaults(job=True)  # one progress bar over the whole run, shown before torch is imported

    study = sub.add_parser(
        "study",
        help="which network properties make activation additions work: train a family of "
        "networks, write docs/study.md (about 40 minutes on 2 cores from an empty cache; resumable)",
    )
    study.add_argument("--out", type=Path, default=Path("docs"), help="output directory (default: %(default)s)")
    study.add_argument(
        "--cache",
        type=_named_path,
        default=Path("runs/study"),
        help="trained models and per-model results, reused by later runs (default: %(default)s)",
    )
    study.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=None,
        metavar="VARIANT",
        help=f"variants to run, of {', '.join(VARIANTS)} (default: all)",
    )
    study.add_argument(
        "--seeds", nargs="+", type=_seed, default=None, metavar="SEED", help="training seeds (default: 0 1 2 3 4)"
    )
    study.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: 3 variants, 1 seed, tiny training and scoring (default: off)",
    )
    study.add_argument("--no-figures", action="store_true", help="skip the figures (default: write them)")
    study.add_argument(
        "--no-matched",
        action="store_true",
        help="skip the matched-accuracy arm (every variant trained to one test loss, 3 seeds) (default: run it)",
    )
    run = study.add_argument_group("where it runs")
    _add_executor(run, "process", "models")
    run.add_argument(
        "--seeds-apart",
        action="store_true",
        help="one task per (variant, seed), each model trained alone, instead of a variant's seeds trained together "
        "(the same weights, bit for bit, at the study's one training thread) (default: together)",
    )
    _add_device(run, "training and analysis")

    grid = sub.add_parser("grid", help="the 10 x 10 steering grid at one hook point")
    grid.add_argument("--hook", default="layer0.post", help="hook point (default: %(default)s)")
    grid.add_argument(
        "--metric",
        choices=tuple(METRICS),
        default="loss",
        help="what each cell shows: " + "; ".join(f"{k}: {v}" for k, v in METRICS.items()) + " (default: %(default)s)",
    )
    grid.add_argument(
        "--digits",
        type=_digit,
        nargs="+",
        default=None,
        metavar="D",
        help="the grid's rows and columns, at least two different digits (default: all ten)",
    )
    grid.add_argument(
        "--n-test",
        type=_n_test,
        default=N_TEST,
        metavar="N",
        help=f"score on the first N of MNIST's {N_TEST:,} test images (default: %(default)s)",
    )
    _add_model_args(grid)

    sweep = sub.add_parser("sweep", help="one a - b vector at every hook point (the study's layer sweep)")
    sweep.add_argument("--a", type=_digit, default=3, help="digit whose image is added (default: %(default)s)")
    sweep.add_argument("--b", type=_digit, default=1, help="digit whose image is subtracted (default: %(default)s)")
    _add_model_args(sweep)

    _add_patch(sub)

    hooks = sub.add_parser("hooks", help="list a model's hook points with their shapes")
    hooks.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint (default: the shipped mnist-mlp)")
    hooks.add_argument(
        "--network",
        metavar="MODULE:FACTORY",
        default=None,
        help="instead of a checkpoint, any network: the callable FACTORY of MODULE builds it (e.g. "
        "torchvision.models:resnet18), and hookedmlp.capture opens it; every module call and op is listed "
        "(default: %(default)s, the checkpoint)",
    )
    hooks.add_argument(
        "--input-shape",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="with --network: one example's shape, e.g. 3 32 32 (default: %(default)s, read from a first Linear)",
    )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` (without the program name); ``--help``, ``--version`` and bad flags exit here."""
    return build_parser().parse_args(list(argv))
