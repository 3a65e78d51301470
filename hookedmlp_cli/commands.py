"""The ``hookedmlp`` commands: ``train``, ``reproduce``, ``grid``, ``sweep``, ``patch``, ``hooks``.

The arguments are parsed by ``hookedmlp_cli.parser`` (without torch, so ``--help`` is
instant). User mistakes print one line on stderr and exit with status 2, never a
traceback; everything a command will write is checked before it computes anything. The
command's own inputs (MNIST images) follow the model's dtype, so a float64 checkpoint works.
"""

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import shlex
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import torch

from hookedmlp.cores import pick_threads
from hookedmlp.data import load_mnist
from hookedmlp.devices import resolve_device
from hookedmlp.errors import HookedMLPError
from hookedmlp.files.atomic import atomic_write, check_writable
from hookedmlp.files.checkpoint import load_checkpoint
from hookedmlp.hooks.root import HookedRoot
from hookedmlp.models.chain import HookedMLP
from hookedmlp.models.configs import LeNetConfig, MLPConfig, Recipe, ResidualConfig
from hookedmlp.models.graph import capture
from hookedmlp.patching import activation_patch, attribution_patch, compare
from hookedmlp.progress import JobProgress
from hookedmlp.train import TrainingInterrupted, TrainSettings, train_model
from hookedmlp_analysis.executors import ExecutorSettings
from hookedmlp_analysis.family import VARIANTS
from hookedmlp_analysis.figures import (
    attribution_scatter,
    grid_heatmap,
    layer_sweep_figure,
    patching_heatmap,
    patching_hooks_figure,
    write_figure,
)
from hookedmlp_analysis.grid import steering_grid
from hookedmlp_analysis.published import study_tables
from hookedmlp_analysis.reproduce import reproduce
from hookedmlp_analysis.study_report import study
from hookedmlp_analysis.sweep import layer_sweep
from hookedmlp_cli.parser import ARCHS, FIGURE_FORMATS, build_parser, parse_args

__all__ = ["main", "run", "build_parser", "recipe_from_args", "figure_target"]

_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`


class _CliError(Exception):
    """Flags that contradict each other."""


# -- train -------------------------------------------------------------------------------------

_ONLY = {  # flag: the architectures it applies to
    "hidden": ("mlp", "lenet"),
    "dropout": ("mlp",),
    "norm": ("mlp", "residual"),
    "channels": ("lenet",),
    "d_model": ("residual",),
    "d_mlp": ("residual",),
    "blocks": ("residual",),
}


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe ``train``'s architecture flags describe; ``_CliError`` for a combination that is not one."""
    arch = args.arch
    if args.residual:
        if arch not in ("mlp", "residual"):
            raise _CliError(
                f"--residual means --arch residual, but --arch is {arch}; pick one architecture "
                f"(valid --arch: {', '.join(ARCHS)})"
            )
        arch = "residual"
    given = {k: getattr(args, k) for k in _ONLY if getattr(args, k) is not None}
    for flag in given:
        if arch not in _ONLY[flag]:
            name = "--" + flag.replace("_", "-")
            raise _CliError(
                f"{name} does not apply to --arch {arch}; it is a flag of --arch {' or '.join(_ONLY[flag])}"
            )
    if arch == "mlp":
        return MLPConfig(
            d_hidden=tuple(given.get("hidden", (512, 512))),
            activation=args.activation,
            dropout=given.get("dropout", 0.0),
            norm=given.get("norm", "none"),
        )
    if arch == "lenet":
        hidden = tuple(given.get("hidden", (120, 84)))
        if len(hidden) != 2:
            raise _CliError(
                f"--arch lenet takes exactly two --hidden widths (its two Linear layers), got {len(hidden)}"
            )
        return LeNetConfig(channels=tuple(given.get("channels", (6, 16))), d_hidden=hidden, activation=args.activation)
    return ResidualConfig(
        d_model=given.get("d_model", 256),
        d_mlp=given.get("d_mlp", 512),
        n_blocks=given.get("blocks", 2),
        activation=args.activation,
        norm=given.get("norm", "layernorm"),
    )


def _cmd_train(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    settings = TrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        threads=args.threads,
        target_loss=args.target_loss,
    )
    card = args.out.with_suffix(".json") if args.card else None
    if card is not None and card == args.out:
        raise _CliError(
            f"--card would write the card over the checkpoint {str(args.out)!r}; use an --out not ending in .json"
        )
    result = train_model(
        recipe,
        settings,
        out=args.out,
        card=card,
        root=args.data_root,
        device=resolve_device(args.device),
        progress=not args.quiet,
        command=args.command_line,
    )
    extra = f" and {card}" if card is not None else ""
    print(
        f"test loss {result.test_loss:.4f}, accuracy {result.test_accuracy:.4f}, {result.seconds:.1f} s -> "
        f"{args.out}{extra}"
    )
    return 0


# -- the analysis commands ------------------------------------------------------------------------


def figure_target(path: Path) -> tuple[Path, tuple[str, ...]]:
    """``(stem, formats)`` for ``--figure``: ``x.html`` means html only; no figure extension means html and png."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix in FIGURE_FORMATS:
        return path.with_suffix(""), (suffix,)
    return path, ("html", "png")


def _figure_paths(path: Path) -> list[Path]:
    stem, formats = figure_target(path)
    return [stem.with_name(f"{stem.name}.{fmt}") for fmt in formats]


def _check_outputs(args: argparse.Namespace) -> None:
    """Every file ``--json`` and ``--figure`` will write must be writable before the computation starts."""
    for path in ([args.json] if args.json else []) + (_figure_paths(args.figure) if args.figure else []):
        check_writable(path)


def _load_model(args: argparse.Namespace) -> HookedRoot:
    """The model to analyse, in eval mode, on ``--device`` (the analysis then runs there)."""
    device = resolve_device(getattr(args, "device", "cpu"))  # hooks lists names: no --device
    model = load_checkpoint(args.checkpoint) if args.checkpoint else HookedMLP.from_pretrained("mnist-mlp")
    return model.eval().to(device)


def _analysis_threads(args: argparse.Namespace) -> int:
    """Set torch's intra-op threads from ``--threads`` (``auto``: the cores free now); the count set."""
    n = pick_threads(args.threads if args.threads == "auto" else int(args.threads))
    torch.set_num_threads(n)
    return n


def _check_mnist_model(model: HookedRoot, args: argparse.Namespace) -> None:
    shape = tuple(model.input_shape)
    if shape not in ((1, 28, 28), (784,), (28, 28)):
        raise _CliError(
            f"hookedmlp {args.command} scores MNIST digits, but {str(args.checkpoint)!r} takes inputs of shape "
            f"{list(shape)}, not [1, 28, 28] or [784]; pass a checkpoint of an MNIST model (d_in=784)"
        )


def _dtype(model: HookedRoot) -> torch.dtype:
    ref = model.reference_tensor()
    return ref.dtype if ref is not None else torch.float32


def _check_coeff_fits(coeff: float, model: HookedRoot) -> None:
    limit = torch.finfo(_dtype(model)).max
    if abs(coeff) > limit:
        raise _CliError(
            f"--coeff {coeff:g} is beyond the model's {_dtype(model)} range (largest finite {limit:.4g}); "
            "use a smaller --coeff"
        )


def _test_set(model: HookedRoot) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's test set in the model's dtype and on its device."""
    images, labels = load_mnist("test")
    ref = model.reference_tensor()
    return (images.to(ref.device, ref.dtype), labels.to(ref.device)) if ref is not None else (images, labels)


def _write_json(data: Any, path: Path) -> None:
    with atomic_write(path, "w") as f:
        json.dump(data, f)
        f.write("\n")


def _write_figures(fig: Any, path: Path) -> None:

    stem, formats = figure_target(path)
    for written in write_figure(fig, stem, formats):
        print(f"wrote {written}")


def _grid_digits(digits: Optional[list[int]]) -> list[int]:
    if digits is None:
        return list(range(10))
    if len(set(digits)) != len(digits) or len(digits) < 2:
        raise _CliError(f"--digits takes at least two different digits, each once; got {' '.join(map(str, digits))}")
    return digits


def _cmd_grid(args: argparse.Namespace) -> int:

    digits = _grid_digits(args.digits)
    _check_outputs(args)
    _analysis_threads(args)
    model = _load_model(args)
    _check_mnist_model(model, args)
    _check_coeff_fits(args.coeff, model)
    model.resolve_name(args.hook)  # a typo fails here, before the status line below
    images, labels = _test_set(model)
    test = (images[: args.n_test], labels[: args.n_test])
    pairs = len(digits) * (len(digits) - 1)
    print(
        f"hookedmlp grid: scoring {pairs} a - b vectors at {args.hook} on {args.n_test} test images",
        file=sys.stderr,
        flush=True,
    )
    grid = steering_grid(
        model,
        hook=args.hook,
        coeff=args.coeff,
        method=args.method,
        test=test,
        digits=digits,
        progress=sys.stderr.isatty(),
    )
    if str(args.json) != "-":
        print(grid.to_markdown(args.metric))
        print(repr(grid))
    if args.json:
        _write_json(grid.to_dict(), args.json)
    if args.figure:
        study_setting = (args.hook, args.coeff, args.method, args.metric, digits) == (
            "layer0.post",
            1.0,
            "first",
            "loss",
            list(range(10)),
        )
        print(f"hookedmlp grid: drawing {args.figure}", file=sys.stderr, flush=True)
        _write_figures(grid_heatmap(grid, study_tables() if study_setting else None, metric=args.metric), args.figure)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:

    if args.a == args.b:
        raise _CliError(f"--a and --b are both {args.a}: the vector would be zero; pick two different digits")
    _check_outputs(args)
    _analysis_threads(args)
    model = _load_model(args)
    _check_mnist_model(model, args)
    _check_coeff_fits(args.coeff, model)
    sweep = layer_sweep(model, args.a, args.b, coeff=args.coeff, method=args.method, test=_test_set(model))
    if str(args.json) != "-":
        print(sweep.to_markdown())
    if args.json:
        _write_json(sweep.to_dict(), args.json)
    if args.figure:
        _write_figures(layer_sweep_figure(sweep, study_tables()), args.figure)
    return 0


def _patch_images(given: tuple[str, Any], test: tuple[torch.Tensor, torch.Tensor], count: int, flag: str) -> Any:
    """``(images, labels)`` of ``--clean`` or ``--corrupt``: a digit's first ``count`` test images, or the indices."""
    images, labels = test
    kind, value = given
    if kind == "digit":
        rows = (labels == value).nonzero().flatten()[:count]
    else:
        bad = [i for i in value if i >= len(labels)]
        if bad:
            raise _CliError(f"{flag} names test image {bad[0]}, but MNIST's test set has {len(labels)} (0 to 9999)")
        rows = torch.tensor(value)
    return images[rows], labels[rows]


def _cmd_patch(args: argparse.Namespace) -> int:
    outs = [args.json] if args.json else []
    if args.out:
        outs += [args.out] + ([_beside(args.out, "-estimate")] if args.attribution != "none" else [])
    if args.figure:
        names = ("-map", "-hooks") + (("-agreement",) if args.attribution != "none" else ())
        outs += [p for name in names for p in _figure_paths(_beside(args.figure, name))]
    for path in outs:
        check_writable(path)
    model = _load_model(args)
    _check_mnist_model(model, args)
    test = _test_set(model)
    sizes = [len(v[1]) for v in (args.clean, args.corrupt) if v[0] == "images"]
    if len(set(sizes)) > 1:
        raise _CliError(
            f"--clean names {sizes[0]} test images and --corrupt {sizes[1]}; patching pairs them image by image, "
            "so name as many of each"
        )
    count = sizes[0] if sizes else args.pairs
    clean, clean_labels = _patch_images(args.clean, test, count, "--clean")
    corrupt, corrupt_labels = _patch_images(args.corrupt, test, count, "--corrupt")
    n = min(len(clean), len(corrupt)) if not sizes else len(clean)
    kwargs = dict(
        hooks=args.hooks, per=args.per, direction=args.direction, labels=(clean_labels[:n], corrupt_labels[:n])
    )
    exact = activation_patch(model, clean[:n], corrupt[:n], args.metric, **kwargs)
    estimate = agreement = None
    if args.attribution != "none":
        estimate = attribution_patch(
            model, clean[:n], corrupt[:n], args.metric, method=args.attribution, steps=args.steps, **kwargs
        )
        agreement = compare(exact, estimate, k=args.top)
    if str(args.json) != "-":
        print(exact.summary(args.top))
        if estimate is not None:
            print(estimate.summary(args.top))
            print(f"agreement: {agreement}")
    if args.json:
        data = {"exact": exact.to_dict()}
        if estimate is not None:
            data.update(estimate=estimate.to_dict(), agreement=dataclasses.asdict(agreement))
        _write_json(data, args.json)
    if args.out:
        exact.save(args.out)
        if estimate is not None:
            estimate.save(_beside(args.out, "-estimate"))
    if args.figure:
        _write_figures(patching_heatmap(exact), _beside(args.figure, "-map"))
        _write_figures(patching_hooks_figure(exact), _beside(args.figure, "-hooks"))
        if estimate is not None:
            _write_figures(attribution_scatter(exact, estimate), _beside(args.figure, "-agreement"))
    return 0


def _beside(path: Path, name: str) -> Path:
    """``runs/x.html`` -> ``runs/x-map.html``: the path with ``name`` added to its stem."""
    suffix = path.suffix if path.suffix.lower().lstrip(".") in (*FIGURE_FORMATS, "safetensors") else ""
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f"{stem}{name}{suffix}")


def _cmd_study(args: argparse.Namespace) -> int:

    by_slug = {v.slug: v.name for v in VARIANTS}
    names = [by_slug[s] for s in args.variants] if args.variants else None
    study(
        out_dir=args.out,
        cache=args.cache,
        quick=args.quick,
        variants=names,
        seeds=args.seeds,
        figures=not args.no_figures,
        log=print,
        executor=_executor(args),
        device=str(resolve_device(args.device)),
        together=not args.seeds_apart,
        matched=not args.no_matched,
    )
    return 0


def _executor(args: argparse.Namespace) -> ExecutorSettings:
    """``--executor``, ``--workers``, ``--ray-address`` and ``--threads``, checked together."""
    return ExecutorSettings(args.executor, args.workers, args.ray_address, args.threads)


def _spread_executor(args: argparse.Namespace) -> Optional[ExecutorSettings]:
    """``None`` (here, at ``--threads``) for the serial executor; else the workers, each at ``--threads`` (auto: 1)."""
    threads = _analysis_threads(args)
    if args.executor == "serial" and args.workers is None and args.ray_address is None:
        return None
    per_task = 1 if args.threads == "auto" else threads
    return ExecutorSettings(args.executor, args.workers, args.ray_address, per_task)


def _cmd_reproduce(args: argparse.Namespace) -> int:

    if args.train and args.checkpoint:
        raise _CliError("--train and --checkpoint exclude each other; pick one")
    for path in (args.out / "reproduction.md", args.out / "figures" / "grid_layer0_post.json"):
        check_writable(path)
    reproduce(
        out_dir=args.out,
        checkpoint=args.checkpoint,
        train=args.train,
        quick=args.quick,
        figures=not args.no_figures,
        log=args.job.log(print),
        progress=args.job,
        executor=_spread_executor(args),
        device=resolve_device(args.device),
    )
    return 0


def _network(spec: str) -> torch.nn.Module:
    """The network ``MODULE:FACTORY`` builds (``FACTORY()``, in eval mode)."""
    module, _, factory = spec.partition(":")
    if not module or not factory:
        raise _CliError(f"--network takes MODULE:FACTORY, e.g. torchvision.models:resnet18; got {spec!r}")
    try:
        build = getattr(importlib.import_module(module), factory)
    except (ImportError, AttributeError) as e:
        raise _CliError(f"--network {spec}: cannot find {factory} in {module} ({type(e).__name__}: {e})") from None
    net = build()
    if not isinstance(net, torch.nn.Module):
        raise _CliError(f"--network {spec} built a {type(net).__name__}, not a torch nn.Module")
    return net.eval()


def _cmd_hooks(args: argparse.Namespace) -> int:
    if args.network and args.checkpoint:
        raise _CliError("--network and --checkpoint exclude each other; pick one")
    if args.input_shape and not args.network:
        raise _CliError("--input-shape applies to --network only (a checkpoint records its input shape)")
    model = capture(_network(args.network), args.input_shape) if args.network else _load_model(args)
    rows = model.hook_table()
    width = max(len(r[0]) for r in rows) + 2
    shape_width = max(len(r[1]) for r in rows) + 2
    for name, shape, what in rows:
        print(f"{name:<{width}}{shape:<{shape_width}}{what}")
    sys.stdout.flush()  # a closed pipe shows here, inside run's handler
    return 0


_COMMANDS = {
    "train": _cmd_train,
    "hooks": _cmd_hooks,
    "reproduce": _cmd_reproduce,
    "study": _cmd_study,
    "grid": _cmd_grid,
    "sweep": _cmd_sweep,
    "patch": _cmd_patch,
}


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the exit's final flush cannot complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced (a test's capture): nothing to silence
        pass


def _out_of_memory(e: BaseException) -> bool:
    """torch's allocator failing (CPU or CUDA), as opposed to any other RuntimeError."""
    text = str(e)
    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text


@contextlib.contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Print each warning as one line, ``hookedmlp CMD: warning: ...``, without its source line."""

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"hookedmlp {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; a long job's progress bar is erased when it ends, however it ends."""
    if getattr(args, "job", False) is True:  # parsed here, not by hookedmlp_cli.main, which starts it earlier
        args.job = JobProgress(f"hookedmlp {args.command}")
    try:
        return _COMMANDS[args.command](args)
    finally:
        if isinstance(getattr(args, "job", None), JobProgress):
            args.job.close()


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run a parsed command; returns the exit status (0, 2 for a user mistake, 130 on Ctrl-C, 141 on a closed pipe)."""
    args.command_line = shlex.join(["hookedmlp", *argv])
    try:
        with _one_line_warnings(args.command):
            return _dispatch(args)
    except BrokenPipeError:  # `hookedmlp hooks | head -1`: the reader has what it wanted
        _quiet_stdout()
        return _BROKEN_PIPE
    except (HookedMLPError, _CliError, OSError) as e:
        print(f"hookedmlp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not _out_of_memory(e):
            raise
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(
            f"hookedmlp {args.command}: error: out of memory ({first}); use smaller sizes, or lower "
            f"HOOKEDMLP_MAX_BYTES so that hookedmlp refuses such sizes before allocating",
            file=sys.stderr,
        )
        return 2
    except TrainingInterrupted as e:
        print(f"hookedmlp {args.command}: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"hookedmlp {args.command}: interrupted; no file was left half-written", file=sys.stderr)
        return 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``hookedmlp`` command (and ``python -m hookedmlp``); returns the exit status.

    User mistakes (``HookedMLPError``, contradictory flags, file errors) print one
    line on stderr and return 2; an interrupt returns 130.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on a user mistake, 130 on interrupt, 141 when stdout is a closed pipe.

    Examples:
        >>> main(["hooks"])  # doctest: +ELLIPSIS
        layer0.pre   [batch, 784]  input of Linear(in_features=784, out_features=512, bias=True)
        layer0.post  [batch, 512]  output of Linear(in_features=784, out_features=512, bias=True)
        ...
        layer4.post  [batch, 10]   output of Linear(in_features=512, out_features=10, bias=True)
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
