"""The network-properties study: train a family of MNIST networks and measure where activation additions work.

The study asked "what is the minimal set of properties a network must have for activation
additions to work?". Each ``Variant`` changes one property of the study's network (depth, width,
activation, dropout, weight decay, LayerNorm, a residual stream, convolutions); each is trained
with several seeds under one recipe, and analysed at every hook class with its controls
(``analysis.steerability``): the threshold-free scores, the metrics at every coefficient of the
grid (coefficient 1 is the study's setting), and the old binary selectivity derived from them.
Trained models and per-model results are cached under a directory, keyed by the full recipe;
a result is reused only if it was measured by the same analysis code (``analysis_version``)
with the same settings, so an interrupted study resumes where it stopped.
A cache entry that cannot be read (a truncated model, a damaged result JSON) is a miss: it is
recomputed, and one line says so.
"""

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from hookedmlp import HookedMLPError, HookedRoot, __version__
from hookedmlp.data import load_mnist
from hookedmlp.errors import ConfigError
from hookedmlp.files.atomic import atomic_write
from hookedmlp.files.checkpoint import sha256_file
from hookedmlp.models.configs import LeNetConfig, MLPConfig, Recipe, ResidualConfig, config_to_dict
from hookedmlp.train import TrainSettings, evaluate, train_model
from hookedmlp.train_files import partial_path
from hookedmlp_analysis.selectivity import COEFFS
from hookedmlp_analysis.spread import stratified_subset
from hookedmlp_analysis.steer_report import best_internal, controls
from hookedmlp_analysis.steer_result import analysis_version
from hookedmlp_analysis.steerability import Steerability, SteerSettings, steerability

__all__ = ["Variant", "VARIANTS", "QUICK", "SEEDS", "STUDY_SETTINGS", "ModelResult", "study_model", "run_study"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One network of the family: its name, the property it changes from the baseline, and how it is trained."""

    name: str
    changes: str
    recipe: Recipe
    weight_decay: float = 0.0

    @property
    def slug(self) -> str:
        """The name as the command line takes it (``depth-1``)."""
        return self.name.replace(" ", "-").lower()


VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", "the study's network: 784-512-512-10, ReLU", MLPConfig()),
    Variant("depth 1", "one hidden layer", MLPConfig(d_hidden=(512,))),
    Variant("depth 4", "four hidden layers", MLPConfig(d_hidden=(512,) * 4)),
    Variant("width 64", "hidden width 64", MLPConfig(d_hidden=(64, 64))),
    Variant("width 2048", "hidden width 2048", MLPConfig(d_hidden=(2048, 2048))),
    Variant("GELU", "GELU activations", MLPConfig(activation="gelu")),
    Variant("Tanh", "Tanh activations", MLPConfig(activation="tanh")),
    Variant("SiLU", "SiLU activations", MLPConfig(activation="silu")),
    Variant("dropout", "dropout 0.2 after each activation", MLPConfig(dropout=0.2)),
    Variant("weight decay", "AdamW weight decay 1.0", MLPConfig(), weight_decay=1.0),
    Variant("LayerNorm", "LayerNorm before each activation", MLPConfig(norm="layernorm")),
    Variant("residual", "a residual stream (d_model 512, 2 blocks, LayerNorm)", ResidualConfig(d_model=512, d_mlp=512)),
    Variant("LeNet", "a LeNet-5-style CNN", LeNetConfig()),
)
QUICK = ("baseline", "residual", "LeNet")
SEEDS = (0, 1, 2)
STUDY_SETTINGS = TrainSettings(epochs=3)  # the family's recipe: AdamW 1e-3, cosine, batch 128
TEST_PER_CLASS = 100  # the scoring set: the first 100 test images of each digit


def _key(variant: Variant, settings: TrainSettings, dataset: str) -> str:
    data = {
        "recipe": config_to_dict(variant.recipe),
        "settings": dataclasses.asdict(settings),
        "dataset": dataset,
        "hookedmlp": __version__,
        "torch": torch.__version__.split("+")[0],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


@dataclasses.dataclass
class ModelResult:
    """One trained model's numbers: test metrics, per hook the coefficient-1 metrics and the derived binary selectivity
    (each hook point has its hook class's numbers), and ``steer``: ``Steerability.summary()``, every site's scores."""

    variant: str
    seed: int
    test_loss: float
    test_accuracy: float
    hooks: list[str]
    at_one: dict[str, dict[str, float]]  # hook -> metric -> mean over pairs at coefficient 1
    share: dict[str, float]  # hook -> share of pairs selective at some coefficient
    best_coeff: dict[str, Optional[float]]  # hook -> median smallest selective coefficient (None: none)
    train_seconds: float
    analysis_seconds: float
    steer: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def logit_hooks(self) -> list[str]:
        """The hook points of the logit class (a control: steering there is adding a constant to the logits)."""
        sites = self.steer.get("sites", [])
        return [h for s in sites if s["kind"] == "class" and s["role"] == "logits" for h in s["hooks"]]

    @property
    def best_hook(self) -> str:
        """The hook point (outside the logit class) with the highest binary selectivity."""
        inside = [h for h in self.hooks if h not in self.logit_hooks] or self.hooks
        return max(inside, key=lambda h: (self.share[h], -self.hooks.index(h)))


def _cached_model(path: Path, expected: dict[str, object], log: Callable[[str], None]) -> Optional[HookedRoot]:
    """The model cached at ``path`` if it loads and was trained from ``expected``; None (a miss) otherwise."""
    if not path.exists():
        return None
    try:
        model = HookedRoot.load(path)
    except (HookedMLPError, OSError) as e:  # truncated, corrupt, edited: retrain it
        log(f"  cache: {path.name} cannot be loaded ({type(e).__name__}); retraining it")
        return None
    found = {k: model.meta.get(k) for k in expected}
    same = json.dumps(found, sort_keys=True, default=list) == json.dumps(expected, sort_keys=True, default=list)
    return model if same else None


def _train(
    variant: Variant,
    seed: int,
    path: Path,
    data: Optional[tuple[Tensor, ...]],
    settings: TrainSettings,
    log: Callable[[str], None] = print,
) -> tuple[HookedRoot, float]:
    expected = {"recipe": config_to_dict(variant.recipe), "settings": dataclasses.asdict(settings)}
    cached = _cached_model(path, expected, log)
    if cached is not None:
        return cached, 0.0
    partial_path(path).unlink(missing_ok=True)  # the cache's own: an interrupted study's last epoch
    start = time.perf_counter()
    result = train_model(
        variant.recipe,
        settings,
        out=path,
        data=data,
        progress=False,
        command=f"hookedmlp study (variant {variant.name!r}, seed {seed})",
    )
    return result.model, time.perf_counter() - start


def _miss(path: Path, why: str, log: Callable[[str], None]) -> None:
    log(f"  cache: {path.name} is unreadable ({why}); recomputing it")


def _cached_result(path: Path, key: dict[str, object], log: Callable[[str], None]) -> Optional[ModelResult]:
    """The result cached at ``path`` if it is a well-formed entry for ``key``; None (a miss) otherwise."""
    if not path.exists():
        return None
    try:
        cached = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, OSError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _miss(path, f"{type(e).__name__}: {str(e)[:60]}", log)
    if not isinstance(cached, dict) or not isinstance(cached.get("result"), dict):
        return _miss(path, "not a cache entry", log)
    if any(cached.get(k) != v for k, v in key.items()) or "digest" not in cached:
        return None  # another model, other settings or an older format: recompute, silently (not damage)
    if cached["digest"] != _digest(cached["result"]):
        return _miss(path, "its digest does not match its numbers", log)
    fields = {f.name for f in dataclasses.fields(ModelResult)}
    if set(cached["result"]) != fields:  # a whole entry of another version of ModelResult
        return _miss(path, f"fields {sorted(set(cached['result']) ^ fields)} missing or extra", log)
    return ModelResult(**cached["result"])


def _digest(result: object) -> str:
    """A checksum of a result's numbers: a flipped digit inside well-formed JSON is damage too."""
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()


def _unique(values: Sequence[object], what: str) -> None:
    """``ConfigError`` if ``values`` repeat: a repeated seed is the same model twice, counted as two."""
    repeated = sorted({repr(v) for v in values if list(values).count(v) > 1})
    if repeated:
        raise ConfigError(
            f"{what} repeat ({', '.join(repeated)}); give each once: repeats would be analysed as independent runs "
            "of one model"
        )


def study_model(
    variant: Variant,
    seed: int,
    cache: Path,
    test: tuple[Tensor, Tensor],
    coeffs: Sequence[float] = COEFFS,
    train_data: Optional[tuple[Tensor, ...]] = None,
    settings: TrainSettings = STUDY_SETTINGS,
    pairs: Optional[Sequence[tuple[int, int]]] = None,
    log: Callable[[str], None] = print,
) -> ModelResult:
    """Train (or load from ``cache``) one model of the family and analyse it at every hook point."""
    settings = dataclasses.replace(settings, seed=seed, weight_decay=variant.weight_decay)
    dataset = "mnist" if train_data is None else f"given ({len(train_data[0])} training images)"
    stem = f"{variant.slug}-seed{seed}-{_key(variant, settings, dataset)}"
    model_path, result_path = cache / f"{stem}.pt", cache / f"{stem}.json"
    model, train_seconds = _train(variant, seed, model_path, train_data, settings, log)
    steer_settings = SteerSettings(c_min=min(coeffs), c_max=max(coeffs))
    key = {
        "sha256": sha256_file(model_path),
        "analysis": analysis_version(),  # measured by this code: never another definition
        "steer_settings": dataclasses.asdict(steer_settings),
        "n_test": len(test[1]),
        "pairs": None if pairs is None else [list(p) for p in pairs],
    }
    cached = _cached_result(result_path, key, log)
    if cached is not None:
        return cached
    start = time.perf_counter()
    model.eval()
    model.meta["dataset"] = "mnist"  # the family is trained on MNIST (all of it, or a subset for quick runs)
    test_loss, test_acc = evaluate(model, *test)
    with torch.no_grad():
        steer = steerability(model, test, pairs=pairs, settings=steer_settings)
    result = ModelResult(
        variant.name,
        seed,
        test_loss,
        test_acc,
        model.hook_names,
        *_per_hook(steer),
        train_seconds,
        time.perf_counter() - start,
        steer.summary(),
    )
    with atomic_write(result_path, "w") as f:
        numbers = dataclasses.asdict(result)
        # the full steerability (every site and pair): what later measurements join on
        json.dump({**key, "result": numbers, "digest": _digest(numbers), "steerability": steer.to_dict()}, f)
    return result


def _per_hook(steer: Steerability) -> tuple[dict, dict, dict]:
    """``at_one``, ``share`` and ``best_coeff`` per hook point, each from its hook class."""
    grid = list(SteerSettings(**steer.settings).grid)
    if 1.0 not in grid:
        raise ConfigError(f"the coefficient grid {grid} lacks 1.0, the study's setting; use c_min = 2 ** -k")
    one = grid.index(1.0)
    at_one, share, best = {}, {}, {}
    for s in steer.classes:
        first = [grid[int(np.argmax(row))] for row in steer.selective(s) if row.any()]
        for h in s.hooks:
            at_one[h] = {m: float(v[:, one].mean()) for m, v in s.grid.items()}
            share[h] = float(s.metrics["selective"].mean())
            best[h] = float(np.median(first)) if first else None
    return at_one, share, best


def _headline(r: ModelResult) -> str:
    """The best internal class's pAUC (scoring half) beside the controls', for the progress line."""
    best, ctl = best_internal(r.steer), controls(r.steer, "pauc_score")
    where = f"pAUC {best['pauc_score']:.2f} at {best['name']}" if best is not None else "no internal class"
    return f"{where} (logit class {ctl['logit class']:.2f}, bias {ctl['bias']:.2f}, pixel {ctl['pixel']:.2f})"


def run_study(
    cache: Path,
    variants: Sequence[Variant] = VARIANTS,
    seeds: Sequence[int] = SEEDS,
    test: Optional[tuple[Tensor, Tensor]] = None,
    coeffs: Sequence[float] = COEFFS,
    train_data: Optional[tuple[Tensor, ...]] = None,
    settings: TrainSettings = STUDY_SETTINGS,
    pairs: Optional[Sequence[tuple[int, int]]] = None,
    log: Callable[[str], None] = print,
) -> list[ModelResult]:
    """Every (variant, seed) model, trained or loaded from ``cache``, analysed; one progress line per model."""
    _unique([v.name for v in variants], "variants")
    _unique(list(seeds), "seeds")
    if test is None:
        test = stratified_subset(*load_mnist("test"), TEST_PER_CLASS)
    results = []
    total = len(variants) * len(seeds)
    for variant in variants:
        for seed in seeds:
            r = study_model(variant, seed, cache, test, coeffs, train_data, settings, pairs, log)
            results.append(r)
            log(
                f"  model {len(results)}/{total}: {variant.name}, seed {seed}: test loss {r.test_loss:.3f}, "
                f"{_headline(r)} (train {r.train_seconds:.0f} s, analysis {r.analysis_seconds:.0f} s)"
            )
    return results
