"""Bad inputs, as one table over the public API and the CLI (issue 6, "Reliability and safety"; issue 11).

Each row names the call, the exception (or warning, or CLI exit) it must give and a regex
its message must match: what was expected and what was received. After every row the
models it touched must be as before: no hook attached, eval mode, and the same logits on
a fixed batch (``torch.equal``).

The test suite runs with jaxtyping + typeguard runtime checks (pyproject's addopts), so a
wrongly *typed* argument (a ``str`` digit, a non-callable hook function, a 0-d tensor) is
rejected by jaxtyping's ``TypeCheckError`` (a ``TypeError``) before the library's own
check runs. Those rows list both outcomes and assert the one that applies: the
library's own exception when the checks are off.

Row ids are ``NNofTOTAL-name``.
"""

import dataclasses
import math
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, Union
from unittest import mock

import pytest
import torch
from _fs import full_dir, readonly_dir
from jaxtyping import TypeCheckError

from hookedmlp import (
    CheckpointError,
    ConfigError,
    DataError,
    FileWriteError,
    HookedMLP,
    HookNameError,
    InputDtypeError,
    MLPConfig,
    ShapeError,
    SteeringError,
    SteeringVector,
    SteeringWarning,
    UnitIndexError,
    UsageError,
)
from hookedmlp.data import prepare_mnist
from hookedmlp.steering import build_steering_vector
from hookedmlp_analysis.grid import steering_grid
from hookedmlp_cli.commands import main

# True when pytest's --jaxtyping-packages instrumented the library (the default here).
TYPECHECKED = hasattr(build_steering_vector, "__wrapped__")

X_MNIST = torch.rand(4, 784, generator=torch.Generator().manual_seed(0))
X_TINY = torch.rand(5, 16, generator=torch.Generator().manual_seed(1))
VALID = "layer0.pre, layer0.post, layer1.pre"  # the start of every "(valid: ...)" listing


@pytest.fixture(scope="module")
def mnist() -> HookedMLP:
    return HookedMLP.from_pretrained("mnist-mlp").eval()


@pytest.fixture(scope="module")
def tiny() -> HookedMLP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return HookedMLP(MLPConfig(d_in=16, d_hidden=(8, 8), d_out=3)).eval()


@dataclasses.dataclass
class Env:
    mnist: HookedMLP
    tiny: HookedMLP
    tmp: Path


@dataclasses.dataclass
class Case:
    name: str
    call: Callable[[Env], Any]  # for "cli": returns argv
    exc: Union[type, str]  # an exception / warning class; for "cli": "argparse" (SystemExit 2) or "status 2"
    match: str  # regex on the message (for "cli": on the one stderr line)
    kind: str = "raises"  # "raises", "warns" or "cli"
    bug: Optional[tuple[str, Any]] = None  # (reason, the exception the library raises today): a strict xfail


def typed(library_exc: type, library_match: str, typeguard_match: str) -> tuple[type, str]:
    """A wrongly typed argument: jaxtyping's TypeCheckError when the checks are on."""
    return (TypeCheckError, typeguard_match) if TYPECHECKED else (library_exc, library_match)


def _enter(ctx) -> None:
    with ctx:
        raise AssertionError("the context was entered; it should have refused its arguments")


def _checkpoint(model: HookedMLP, path: Path) -> dict:
    model.save(path)
    return torch.load(path, weights_only=True)


def _edited(env: Env, edit: Callable[[dict], Any]) -> Path:
    """The tiny model's checkpoint with ``edit`` applied (as a user or a bad tool might)."""
    path = env.tmp / "edited.pt"
    ckpt = _checkpoint(env.tiny, path)
    edit(ckpt)
    torch.save(ckpt, path)
    return path


def _mnist_checkpoint_with_tiny_layers(env: Env) -> Path:
    """The shipped model's weights under the tiny model's architecture description."""
    path = env.tmp / "other-arch.pt"
    ckpt = _checkpoint(env.mnist, path)
    tiny = _checkpoint(env.tiny, env.tmp / "tiny.pt")
    ckpt.update(
        layers=tiny["layers"], input_shape=tiny["input_shape"], first_shape=tiny["first_shape"], config=tiny["config"]
    )
    torch.save(ckpt, path)
    return path


def _model_file(env: Env) -> Path:
    path = env.tmp / "model.pt"
    env.tiny.save(path)
    return path


def _train_mode_steer(env: Env) -> None:
    """A model with dropout in training mode (the mnist model has no module that differs in training mode)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = HookedMLP(MLPConfig(d_in=16, d_hidden=(8,), d_out=3, dropout=0.5)).train()
    with model.steer(SteeringVector({"layer0.post": torch.ones(8)})):
        pass


def _patch_batch_mismatch(env: Env) -> None:
    with env.mnist.patch("layer0.post", torch.zeros(3, 512)):
        env.mnist(X_MNIST)  # a batch of 4


def _patch_and_run(env: Env, value: float) -> None:
    with env.mnist.patch("layer0.post", torch.full((512,), value)):
        env.mnist(X_MNIST)


def _hook_returns(env: Env, hook: str, change: Callable[[torch.Tensor], torch.Tensor]) -> None:
    env.mnist.run_with_hooks(X_MNIST, fwd_hooks=[(hook, lambda a, hook: change(a))])


def _enter_twice(env: Env) -> None:
    ctx = env.mnist.steer(SteeringVector({"layer0.post": torch.ones(512)}))
    with ctx:
        with ctx:
            pass


def _read_only(env: Env, name: str = "ro.pt") -> Path:
    path = env.tmp / name
    env.tiny.save(path)
    path.chmod(0o444)
    return path


def _under_a_file(env: Env, name: str = "m.pt") -> Path:
    (env.tmp / "notes.txt").write_text("a file, not a directory")
    return env.tmp / "notes.txt" / name


def _save_on_a_full_disk(env: Env) -> None:
    with full_dir(env.tmp / "disk", size="64k", fill=False) as disk:
        env.tiny.save(disk / "m.pt")
        HookedMLP(MLPConfig(d_in=64, d_hidden=(256,), d_out=3)).save(disk / "m.pt")


def _save_in_a_read_only_dir(env: Env) -> None:
    with readonly_dir(env.tmp / "ro") as ro:
        env.tiny.save(ro / "m.pt")


def _pickle_file(env: Env, obj: Any, protocol: int) -> Path:
    path = env.tmp / f"p{protocol}.pt"
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def _vector_file(env: Env) -> Path:
    path = env.tmp / "v.pt"
    SteeringVector({"layer0.post": torch.ones(512)}).save(path)
    return path


def _mnist_under_a_file(env: Env) -> None:
    (env.tmp / "notes.txt").write_text("a file")
    with mock.patch.dict(os.environ, {"HOOKEDMLP_DATA": str(env.tmp / "notes.txt")}):
        prepare_mnist()


NAN_IMAGE = torch.full((784,), math.nan)
EXP_INPUT = r"expected input of shape \[batch, 784\] or \[batch, 1, 28, 28\] or \[batch, 28, 28\], got "

_str_digit = (
    ConfigError,
    r"a \(a class of MNIST train, or input tensors\) must be an int from 0 to 9, got str \('3'\)",
)
_not_callable = typed(
    TypeError, r"hook function must be callable as fn\(activation, hook=\.\.\.\), got int", r"parameter 'fwd_hooks'"
)
_rank0 = typed(ShapeError, EXP_INPUT + r"\[\]", r"parameter 'x'")
HOOK_DTYPE = (
    r"hook HookHandle\('{hook}', fwd, fn=.*\) returned a {got} tensor on cpu, expected torch\.float32 on cpu \(the "
    r"activation at '{hook}'\); convert it with \.to\(torch\.float32\)"
)

CASES = [
    # -- shapes and ranks -------------------------------------------------------------------------
    Case(
        "forward-1d-input",
        lambda e: e.mnist(torch.rand(784)),
        ShapeError,
        EXP_INPUT + r"\[784\]; add a batch dimension with x\.unsqueeze\(0\)",
    ),
    Case("forward-783-features", lambda e: e.mnist(torch.rand(4, 783)), ShapeError, EXP_INPUT + r"\[4, 783\]$"),
    Case(
        "forward-2-channels", lambda e: e.mnist(torch.rand(4, 2, 28, 28)), ShapeError, EXP_INPUT + r"\[4, 2, 28, 28\]$"
    ),
    Case("forward-5d", lambda e: e.mnist(torch.rand(2, 1, 1, 28, 28)), ShapeError, EXP_INPUT + r"\[2, 1, 1, 28, 28\]$"),
    Case("forward-0d", lambda e: e.mnist(torch.tensor(0.5)), *_rank0),
    Case(
        "run_with_cache-783-features",
        lambda e: e.mnist.run_with_cache(torch.rand(4, 783)),
        ShapeError,
        EXP_INPUT + r"\[4, 783\]",
    ),
    Case(
        "start_at-wrong-width",
        lambda e: e.mnist(torch.rand(4, 5), start_at="layer0.post"),
        ShapeError,
        r"start_at='layer0\.post' expects the activation at 'layer0\.post', of shape \[batch, 512\], got \[4, 5\]",
    ),
    # -- dtypes ------------------------------------------------------------------------------------
    Case(
        "forward-uint8-images",
        lambda e: e.mnist((torch.rand(4, 1, 28, 28) * 255).to(torch.uint8)),
        InputDtypeError,
        r"expected a floating-point input \(pixels in \[0, 1\]\), got dtype torch\.uint8; convert with x\.float\(\) "
        r"/ 255",
    ),
    Case(
        "forward-int64",
        lambda e: e.mnist(torch.zeros(4, 784, dtype=torch.int64)),
        InputDtypeError,
        r"expected a floating-point input .*got dtype torch\.int64",
    ),
    Case(
        "forward-float64",
        lambda e: e.mnist(X_MNIST.double()),
        InputDtypeError,
        r"input dtype torch\.float64 does not match the model's torch\.float32; use x\.to\(torch\.float32\)",
    ),
    Case(
        "run_with_cache-float64",
        lambda e: e.mnist.run_with_cache(X_MNIST.double(), names_filter="*.post"),
        InputDtypeError,
        r"input dtype torch\.float64 does not match the model's torch\.float32",
    ),
    Case(
        "hook-returns-float64",
        lambda e: _hook_returns(e, "layer0.post", lambda a: a.double()),
        InputDtypeError,
        HOOK_DTYPE.format(hook=r"layer0\.post", got=r"torch\.float64"),
    ),
    Case(
        "hook-returns-a-bool-mask",
        lambda e: _hook_returns(e, "layer1.post", lambda a: a > 0),
        InputDtypeError,
        HOOK_DTYPE.format(hook=r"layer1\.post", got=r"torch\.bool"),
    ),
    Case(
        "hook-at-the-logits-returns-float16",
        lambda e: _hook_returns(e, "layer4.post", lambda a: a.half()),
        InputDtypeError,
        HOOK_DTYPE.format(hook=r"layer4\.post", got=r"torch\.float16"),
    ),
    # -- empty batches -----------------------------------------------------------------------------
    Case(
        "forward-empty-batch",
        lambda e: e.mnist(torch.zeros(0, 784)),
        ShapeError,
        r"empty batch: input has shape \[0, 784\]; expected at least one example",
    ),
    Case(
        "steering_vector-empty-batch",
        lambda e: e.mnist.steering_vector(torch.zeros(0, 784), 1, "layer0.post"),
        ShapeError,
        r"empty batch: input has shape \[0, 784\]; expected at least one example",
    ),
    # -- NaN / inf / overflow ----------------------------------------------------------------------------
    Case(
        "steering_vector-nan-coeff",
        lambda e: e.mnist.steering_vector(3, 1, "layer0.post", coeff=math.nan),
        SteeringError,
        r"coeff must be finite, got nan; use a finite number such as 1\.0",
    ),
    Case(
        "steer-inf-coeff",
        lambda e: _enter(e.mnist.steer(SteeringVector({"layer0.post": torch.ones(512)}), coeff=math.inf)),
        SteeringError,
        r"coeff must be finite, got inf",
    ),
    Case(
        "steer-coeff-overflowing-float32",
        lambda e: _enter(e.mnist.steer(SteeringVector({"layer0.post": torch.full((512,), 10.0)}), coeff=1e38)),
        SteeringError,
        r"coeff=1e\+38 times the vector's largest entry 10 is 1e\+39, beyond torch\.float32's range \(largest finite "
        r"3\.403e\+38\)",
    ),
    Case(
        "vector-times-nan",
        lambda e: SteeringVector({"layer0.post": torch.ones(512)}) * math.nan,
        SteeringError,
        r"coeff must be finite, got nan",
    ),
    Case(
        "vector-times-a-bool",
        lambda e: SteeringVector({"layer0.post": torch.ones(512)}) * True,
        SteeringError,
        r"coeff must be a real number, got bool \(True\)",
    ),
    Case(
        "steering_vector-nan-image-contrast",
        lambda e: e.mnist.steering_vector(NAN_IMAGE, 1, "layer0.post"),
        SteeringError,
        r"contrast input a contains NaN or infinite values; pass finite inputs",
    ),
    Case(
        "steering_grid-nan-images",
        lambda e: steering_grid(e.mnist, test=(torch.full((3, 784), math.nan), torch.tensor([0, 1, 2]))),
        UsageError,
        r"test images contain NaN or infinite values",
    ),
    Case(
        "vector-with-nan",
        lambda e: SteeringVector({"layer0.post": torch.full((512,), math.nan)}),
        SteeringError,
        r"steering vector at 'layer0\.post' contains NaN or infinite values",
    ),
    Case(
        "clamp-nan-value",
        lambda e: _enter(e.mnist.clamp("layer0.post", 0, math.nan)),
        SteeringError,
        r"clamp value must be finite, got nan$",
    ),
    Case(
        "patch-inf-activations",
        lambda e: _patch_and_run(e, math.inf),
        SteeringError,
        r"^patch activations must be finite, got inf \(512 of 512 entries are NaN or infinite\)$",
    ),
    Case(
        "patch-nan-activations",
        lambda e: _patch_and_run(e, math.nan),
        SteeringError,
        r"^patch activations must be finite, got nan",
    ),
    # -- digits --------------------------------------------------------------------------------------
    Case(
        "digit-10",
        lambda e: e.mnist.steering_vector(10, 1, "layer0.post"),
        ConfigError,
        r"^a \(a class of MNIST train, or input tensors\) must be from 0 to 9, got 10$",
    ),
    Case(
        "digit-minus-1",
        lambda e: e.mnist.steering_vector(3, -1, "layer0.post"),
        ConfigError,
        r"^b \(a class of MNIST train, or input tensors\) must be from 0 to 9, got -1$",
    ),
    Case(
        "digit-bool",
        lambda e: e.mnist.steering_vector(True, 1, "layer0.post"),
        ConfigError,
        r"^a \(a class of MNIST train, or input tensors\) must be an int from 0 to 9, got bool \(True\)",
    ),
    Case("digit-str", lambda e: e.mnist.steering_vector("3", 1, "layer0.post"), *_str_digit),
    Case(
        "method-best",
        lambda e: e.mnist.steering_vector(3, 1, "layer0.post", method="best"),
        ConfigError,
        r"method must be one of 'first', 'mean', got 'best'",
    ),
    Case(
        "steering_grid-label-10",
        lambda e: steering_grid(e.mnist, test=(X_MNIST[:3], torch.tensor([0, 1, 10]))),
        UsageError,
        r"labels .*\b10\b",
    ),
    # -- unknown hooks and filters ------------------------------------------------------------------
    Case(
        "names_filter-no-match",
        lambda e: e.mnist.run_with_cache(X_MNIST, names_filter="*.nope"),
        HookNameError,
        r"pattern '\*\.nope' matched no hook point \(valid: " + VALID,
    ),
    Case(
        "add_hook-layer9",
        lambda e: e.mnist.add_hook("layer9.post", lambda a, hook: None),
        HookNameError,
        r"unknown hook 'layer9\.post'; did you mean 'layer4\.post'\? \(valid: " + VALID,
    ),
    Case(
        "steer-hook-typo",
        lambda e: _enter(e.mnist.steer(a=3, b=1, hook="layer0.pst")),
        HookNameError,
        r"unknown hook 'layer0\.pst'; did you mean 'layer0\.post'\?",
    ),
    Case(
        "stop_at-pattern",
        lambda e: e.mnist(X_MNIST, stop_at="*.post"),
        HookNameError,
        r"expected one hook name, got the pattern '\*\.post' matching 5 hook points",
    ),
    Case(
        "hooks-list-later-entry-unknown",
        lambda e: _enter(
            e.mnist.hooks(fwd_hooks=[("layer0.post", lambda a, hook: None), ("layer1.pots", lambda a, hook: None)])
        ),
        HookNameError,
        r"unknown hook 'layer1\.pots'; did you mean 'layer1\.post'\?",
    ),
    Case(
        "hooks-list-later-entry-not-callable",
        lambda e: _enter(e.mnist.hooks(fwd_hooks=[("layer0.post", lambda a, hook: None), ("layer1.post", 3)])),
        *_not_callable,
    ),
    Case(
        "stop_at-before-start_at",
        lambda e: e.mnist(torch.rand(4, 512), start_at="layer2.post", stop_at="layer0.post"),
        UsageError,
        r"stop_at='layer0\.post' comes before start_at='layer2\.post', so the pass would stop before it starts; hook "
        r"order is layer0\.pre, ",
    ),
    Case(
        "context-entered-twice",
        _enter_twice,
        UsageError,
        r"this hook context is already active; make a new one \(e\.g\. call model\.steer\(\.\.\.\) again\) to nest",
    ),
    # -- vectors and interventions that do not fit -----------------------------------------------------
    Case(
        "vector-wrong-size",
        lambda e: _enter(SteeringVector({"layer0.post": torch.zeros(5)}).apply(e.mnist)),
        ShapeError,
        r"steering vector at 'layer0\.post' has shape \[5\], but one example's activation there is \[512\] \(a batch "
        r"is \[batch, 512\]\); expected a tensor of shape \[512\]",
    ),
    Case(
        "vector-for-missing-hook",
        lambda e: _enter(SteeringVector({"layer7.post": torch.zeros(512)}).apply(e.mnist)),
        HookNameError,
        r"steering vector has hook 'layer7\.post', which this model lacks; did you mean 'layer4\.post'\?",
    ),
    Case(
        "mnist-vector-on-tiny-model",
        lambda e: _enter(e.tiny.steer(SteeringVector({"layer1.post": torch.ones(512)}))),
        ShapeError,
        r"has shape \[512\], but one example's activation there is \[8\] \(a batch is \[batch, 8\]\); expected a "
        r"tensor of shape \[8\]",
    ),
    Case(
        "ablate-zero-direction",
        lambda e: _enter(e.mnist.ablate(torch.zeros(512), "layer0.post")),
        SteeringError,
        r"direction must be non-zero and finite to project out, got norm 0$",
    ),
    Case(
        "patch-wrong-width",
        lambda e: _enter(e.mnist.patch("layer0.post", torch.ones(3, 5))),
        ShapeError,
        r"patch activations have shape \[3, 5\]; expected \[batch, 512\] or one example's \[512\] for 'layer0\.post'",
    ),
    Case(
        "patch-batch-mismatch-at-run-time",
        _patch_batch_mismatch,
        ShapeError,
        r"patch at 'layer0\.post' holds a batch of 3 but the run has 4",
    ),
    Case(
        "clamp-index-out-of-range",
        lambda e: _enter(e.mnist.clamp("layer0.post", 512, 1.0)),
        UnitIndexError,
        r"unit index out of range for 'layer0\.post' with 512 units: got \[512\]; expected 0\.\.511",
    ),
    Case(
        "hook-returns-wrong-shape",
        lambda e: _hook_returns(e, "layer0.post", lambda a: a[:, :3]),
        ShapeError,
        r"returned shape \[4, 3\], expected \[4, 512\] \(the shape of the activation at 'layer0\.post'\)",
    ),
    # -- files read ----------------------------------------------------------------------------------
    Case(
        "load-edited-state-dict",
        lambda e: HookedMLP.load(
            _edited(e, lambda c: c["state_dict"].__setitem__("layer0.module.weight", torch.zeros(8, 15)))
        ),
        CheckpointError,
        r"does not match the architecture it describes \(missing \[\], unexpected \[\], shape mismatches "
        r"\['layer0\.module\.weight: \[8, 15\] vs \[8, 16\]'\]\)",
    ),
    Case(
        "load-weights-of-another-architecture",
        lambda e: HookedMLP.load(_mnist_checkpoint_with_tiny_layers(e)),
        CheckpointError,
        r"does not match the architecture it describes .*shape mismatches \['layer0\.module\.weight: \[512, 784\] vs "
        r"\[8, 16\]'",
    ),
    Case(
        "load-missing-file",
        lambda e: HookedMLP.load(e.tmp / "nope.pt"),
        CheckpointError,
        r"checkpoint '.*nope\.pt' does not exist; check the path",
    ),
    Case(
        "load-directory",
        lambda e: HookedMLP.load(e.tmp),
        CheckpointError,
        r"checkpoint '.*' is a directory; expected a file written by hookedmlp",
    ),
    Case(
        "vector-load-directory",
        lambda e: SteeringVector.load(e.tmp),
        CheckpointError,
        r"steering vector '.*' is a directory; expected a file written by hookedmlp",
    ),
    Case(
        "vector-load-a-model-checkpoint",
        lambda e: SteeringVector.load(_model_file(e)),
        CheckpointError,
        r"'.*model\.pt' is not a hookedmlp steering vector \(version 1\); save one with SteeringVector\.save",
    ),
    Case(
        "vector-load-onto-a-device-this-machine-lacks",
        lambda e: SteeringVector.load(_vector_file(e), device="cuda:64"),
        UsageError,
        r"cannot load steering vector '.*v\.pt' onto 'cuda:64': this machine has (no CUDA device|\d+ CUDA device)",
    ),
    Case(
        "load-state-dict-entry-not-a-tensor",
        lambda e: HookedMLP.load(_edited(e, lambda c: c["state_dict"].__setitem__("layer0.module.weight", "x"))),
        CheckpointError,
        r"corrupt or was edited",
    ),
    Case(
        "load-layer-entry-not-a-dict",
        lambda e: HookedMLP.load(_edited(e, lambda c: c["layers"].__setitem__(1, "relu"))),
        CheckpointError,
        r"layer 1: malformed module description 'relu'; expected \{'type': \.\.\., 'args': \{\.\.\.\}\}",
    ),
    Case(
        "load-input_shape-not-a-list",
        lambda e: HookedMLP.load(_edited(e, lambda c: c.__setitem__("input_shape", 16))),
        CheckpointError,
        r"lacks a list of layers and positive input and first shapes; the file is corrupt or was edited",
    ),
    Case(
        "load-negative-width",
        lambda e: HookedMLP.load(_edited(e, lambda c: c["layers"][0]["args"].__setitem__("in_features", -16))),
        CheckpointError,
        r"layer 0: cannot build Linear\(\{'in_features': -16, ",
    ),
    Case(
        "load-meta-not-a-dict",
        lambda e: HookedMLP.load(_edited(e, lambda c: c.__setitem__("meta", [1, 2]))),
        CheckpointError,
        r"meta",
    ),
    Case(
        "load-a-protocol-4-pickle-of-objects",
        lambda e: HookedMLP.load(_pickle_file(e, {"config": MLPConfig()}, 4)),
        CheckpointError,
        r"contains pickled objects other than tensors and plain containers "
        r"\(hookedmlp\.models\.configs\.MLPConfig\); refusing "
        r"to load it \(it could run code\)\. Re-save it with hookedmlp from code you trust\.$",
    ),
    Case(
        "load-a-protocol-5-pickle-of-plain-data",
        lambda e: HookedMLP.load(_pickle_file(e, {"a": [1]}, 5)),
        CheckpointError,
        r"is a plain Python pickle \(protocol 5\), not a file written by torch\.save; refusing to unpickle it",
    ),
    Case(
        "pretrained-typo",
        lambda e: HookedMLP.from_pretrained("mnist-mpl"),
        CheckpointError,
        r"unknown pretrained model 'mnist-mpl'; did you mean 'mnist-mlp'\?",
    ),
    # -- files written -----------------------------------------------------------------------------------
    Case(
        "save-over-a-read-only-file",
        lambda e: e.tiny.save(_read_only(e)),
        FileWriteError,
        r"cannot write '.*ro\.pt': the file is read-only \(mode 444\); make it writable \(chmod u\+w\) or choose "
        r"another path$",
    ),
    Case(
        "save-under-a-regular-file",
        lambda e: e.tiny.save(_under_a_file(e)),
        FileWriteError,
        r"cannot write '.*notes\.txt/m\.pt': '.*notes\.txt' is a file, not a directory; choose another path$",
    ),
    Case(
        "save-to-a-directory",
        lambda e: SteeringVector({"layer0.post": torch.ones(512)}).save(e.tmp),
        FileWriteError,
        r"cannot write '.*': it is a directory; pass a file path$",
    ),
    Case(
        "save-in-a-read-only-directory",
        _save_in_a_read_only_dir,
        FileWriteError,
        r"cannot write '.*ro/m\.pt': the directory '.*ro' is not writable \(.*\); choose another path$",
    ),
    Case(
        "save-on-a-full-disk",
        _save_on_a_full_disk,
        FileWriteError,
        r"^no space left writing .*disk/m\.pt \(old file kept\); free some space or choose another path$",
    ),
    Case(
        "mnist-cache-under-a-regular-file",
        _mnist_under_a_file,
        DataError,
        r"cannot write the MNIST cache '.*notes\.txt/MNIST/raw' \(.*'.*notes\.txt' is a file, not a directory.*\); set "
        r"HOOKEDMLP_DATA \(or pass root=, hookedmlp train --data-root\) to a writable directory$",
    ),
    # -- a model in training mode: a warning, not an error ----------------------------------------------
    Case(
        "steer-in-training-mode",
        _train_mode_steer,
        SteeringWarning,
        r"steering a model in training mode: layer2\.module \(Dropout\) compute something else there \(dropout is "
        r"random",
        kind="warns",
    ),
    # -- the command line ---------------------------------------------------------------------------------
    Case(
        "cli-grid-coeff-inf",
        lambda e: ["grid", "--coeff", "inf"],
        "argparse",
        r"argument --coeff: expected a finite number, got inf",
        kind="cli",
    ),
    Case(
        "cli-grid-coeff-beyond-float32",
        lambda e: ["grid", "--coeff", "1e308"],
        "status 2",
        r"--coeff 1e\+308 is beyond the model's torch\.float32 range \(largest finite 3\.403e\+38\); use a smaller "
        r"--coeff",
        kind="cli",
    ),
    Case(
        "cli-sweep-a-12",
        lambda e: ["sweep", "--a", "12"],
        "argparse",
        r"argument --a: expected a digit 0-9, got '12'",
        kind="cli",
    ),
    Case(
        "cli-grid-hook-typo",
        lambda e: ["grid", "--hook", "layer0.pst"],
        "status 2",
        r"unknown hook 'layer0\.pst'; did you mean 'layer0\.post'\?",
        kind="cli",
    ),
    Case(
        "cli-grid-method-best",
        lambda e: ["grid", "--method", "best"],
        "argparse",
        r"argument --method: invalid choice: 'best' \(choose from '?first'?, '?mean'?\)",
        kind="cli",
    ),
    Case(
        "cli-grid-json-under-a-file",
        lambda e: ["grid", "--json", str(_under_a_file(e, "g.json"))],
        "status 2",
        r"notes\.txt' is a file, not a directory",
        kind="cli",
    ),
    Case(
        "cli-train-epochs-0",
        lambda e: ["train", "--epochs", "0"],
        "argparse",
        r"argument --epochs: expected a positive integer, got 0",
        kind="cli",
    ),
    Case(
        "cli-train-lr-1e300",
        lambda e: ["train", "--lr", "1e300", "--out", str(e.tmp / "m.pt")],
        "status 2",
        r"lr must be finite and in \(0, 10\], got 1e\+300",
        kind="cli",
    ),
    Case(
        "cli-train-unknown-arch",
        lambda e: ["train", "--arch", "vit"],
        "argparse",
        r"argument --arch: invalid choice: 'vit' \(choose from 'mlp', 'lenet', 'residual'\)",
        kind="cli",
    ),
    Case(
        "cli-train-residual-with-lenet",
        lambda e: ["train", "--residual", "--arch", "lenet", "--out", str(e.tmp / "m.pt")],
        "status 2",
        r"--residual means --arch residual, but --arch is lenet; pick one architecture \(valid --arch: mlp, lenet, "
        r"residual\)",
        kind="cli",
    ),
    Case(
        "cli-train-dropout-for-lenet",
        lambda e: ["train", "--arch", "lenet", "--dropout", "0.2", "--out", str(e.tmp / "m.pt")],
        "status 2",
        r"--dropout does not apply to --arch lenet; it is a flag of --arch mlp",
        kind="cli",
    ),
    Case(
        "cli-train-batchnorm-residual",
        lambda e: ["train", "--residual", "--norm", "batchnorm", "--out", str(e.tmp / "m.pt")],
        "status 2",
        r"norm must be one of 'none', 'layernorm', got 'batchnorm'",
        kind="cli",
    ),
    Case(
        "cli-train-out-read-only",
        lambda e: ["train", "--out", str(_read_only(e, "m.pt"))],
        "status 2",
        r"cannot write '.*m\.pt': the file is read-only",
        kind="cli",
    ),
    Case(
        "cli-train-out-under-a-file",
        lambda e: ["train", "--out", str(_under_a_file(e))],
        "status 2",
        r"notes\.txt' is a file, not a directory",
        kind="cli",
    ),
    Case(
        "cli-reproduce-out-is-a-file",
        lambda e: ["reproduce", "--out", str(_read_only(e, "docs"))],
        "status 2",
        r"cannot write '.*docs/reproduction\.md': '.*docs' is a file, not a directory",
        kind="cli",
    ),
    Case(
        "cli-unknown-subcommand",
        lambda e: ["steer", "3", "1"],
        "argparse",
        r"argument command: invalid choice: 'steer'",
        kind="cli",
    ),
    Case(
        "cli-hooks-corrupt-checkpoint",
        lambda e: [
            "hooks",
            "--checkpoint",
            str(_edited(e, lambda c: c["state_dict"].__setitem__("layer0.module.weight", "x"))),
        ],
        "status 2",
        r"corrupt or was edited",
        kind="cli",
    ),
    Case(
        "cli-hooks-checkpoint-directory",
        lambda e: ["hooks", "--checkpoint", str(e.tmp)],
        "status 2",
        r"checkpoint '.*' is a directory; expected a file",
        kind="cli",
    ),
    Case(
        "cli-hooks-pickle-payload",
        lambda e: ["hooks", "--checkpoint", str(_pickle_file(e, {"c": MLPConfig()}, 4))],
        "status 2",
        r"contains pickled objects other than tensors and plain containers \(hookedmlp\.models\.configs\.MLPConfig\)",
        kind="cli",
    ),
]
N = len(CASES)
IDS = [f"{i:02d}of{N}-{c.name}" for i, c in enumerate(CASES, start=1)]
PARAMS = [
    pytest.param(
        c, id=i, marks=[pytest.mark.xfail(strict=True, raises=c.bug[1], reason="BUG: " + c.bug[0])] if c.bug else []
    )
    for c, i in zip(CASES, IDS)
]


def test_the_catalogue_has_at_least_30_cases():
    assert N >= 30
    assert len(set(c.name for c in CASES)) == N


def _state(model: HookedMLP, x: torch.Tensor):
    with torch.no_grad():
        return model.attached_hooks(), model.training, model(x).clone()


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input(
    case: Case, mnist: HookedMLP, tiny: HookedMLP, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    env = Env(mnist, tiny, tmp_path)
    before = {"mnist": _state(mnist, X_MNIST), "tiny": _state(tiny, X_TINY)}
    assert before["mnist"][:2] == ([], False) and before["tiny"][:2] == ([], False)
    if case.kind == "raises":
        with pytest.raises(case.exc, match=case.match) as info:
            case.call(env)
        assert type(info.value) is case.exc or case.exc is TypeCheckError, (
            f"got {type(info.value)}, a subclass of {case.exc}"
        )
    elif case.kind == "warns":
        with pytest.warns(case.exc, match=case.match):
            case.call(env)
    else:
        _check_cli(case, case.call(env), capsys)
    for name, model, x in (("mnist", mnist, X_MNIST), ("tiny", tiny, X_TINY)):
        hooks, training, logits = _state(model, x)
        assert hooks == [], f"{case.name} left hooks on the {name} model: {hooks}"
        assert not any(hp.has_hooks() for hp in model.hook_dict.values())
        assert training is False, f"{case.name} left the {name} model in training mode"
        assert torch.equal(logits, before[name][2]), f"{case.name} changed the {name} model's logits"


def _check_cli(case: Case, argv: list, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    status: Optional[int]
    try:
        status = main(argv)
    except SystemExit as e:
        assert case.exc == "argparse", f"argparse exited for {argv}: {e}"
        status = e.code
    else:
        assert case.exc == "status 2", f"main({argv}) returned {status} instead of argparse exiting"
    out, err = capsys.readouterr()
    assert status == 2, (status, out, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {err!r}"
    assert re.match(r"hookedmlp( \w+)?: error: ", lines[0]), lines[0]
    assert re.search(case.match, lines[0]), (case.match, lines[0])
