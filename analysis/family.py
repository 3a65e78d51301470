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
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from hookedmlp import HookedMLPError, HookedModel, __version__
from hookedmlp.data import load_mnist
from hookedmlp.errors import ConfigError
from hookedmlp.files.atomic import atomic_write
from hookedmlp.files.checkpoint import sha256_file
from hookedmlp.models.configs import LeNetConfig, MLPConfig, Recipe, ResidualConfig, config_to_dict
from hookedmlp.train import TrainSettings, evaluate, train_model
from hookedmlp.train_files import partial_path
from hookedmlp_analysis.properties import model_properties
from hookedmlp_analysis.selectivity import COEFFS
from hookedmlp_analysis.spread import stratified_subset
from hookedmlp_analysis.steer_report import best_internal, controls
from hookedmlp_analysis.steer_result import analysis_version
from hookedmlp_analysis.steerability import Steerability, SteerSettings, steerability

__all__ = [
    "Variant",
    "VARIANTS",
    "QUICK",
    "SEEDS",
    "STUDY_SETTINGS",
    "MATCHED_LOSS",
    "ARM_SEEDS",
    "QUICK_MATCHED_LOSS",
    "QUICK_CHECK_EVERY",
    "VECTORS",
    "PROPERTY_PER_CLASS",
    "ModelResult",
    "study_model",
    "cell_files",
    "cached_model",
    "headline",
]


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
SEEDS = (0, 1, 2, 3, 4)  # five per variant: with three against three no single comparison can reach p < 0.05
STUDY_SETTINGS = TrainSettings(epochs=3)  # the family's recipe: AdamW 1e-3, cosine, batch 128
# The matched-accuracy arm: every variant trained with that recipe until its test loss is at most MATCHED_LOSS, just
# above the worst variant's at the end of the recipe (width 64: 0.18 to 0.20), so that each can reach it.
MATCHED_LOSS = 0.2
ARM_SEEDS = 3  # the vector and matched arms take the first three of the study's seeds (their cost: docs/performance.md)
QUICK_MATCHED_LOSS = 1.0  # a quick run's (one epoch on 2,000 images: some models reach it, some do not)
QUICK_CHECK_EVERY = 5  # a quick run's epoch is 16 steps
TEST_PER_CLASS = 100  # the scoring set: the first 100 test images of each digit
PROPERTY_PER_CLASS = 50  # the property set: the first 50 training images of each digit (never scored on)
STEER_COLUMNS = ("pauc", "pauc_score", "heldout_flip")  # the scores kept beside the properties, per class and pair
# Where each pair's vector comes from: (method, exemplar) of ``steerability``. The first is the study's (the scores
# above); the others measure how much the choice of vector moves the scores, at the internal hook classes.
VECTORS: tuple[tuple[str, str, int], ...] = (
    ("exemplar 0", "first", 0),
    ("exemplar 1", "first", 1),
    ("exemplar 2", "first", 2),
    ("class mean", "mean", 0),
)


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
    # one row per hook class and pair: its scores (STEER_COLUMNS) and its properties (analysis.properties)
    properties: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # one row per vector source (an index into VECTORS), internal hook class and pair: its pAUC
    vectors: list[dict[str, Any]] = dataclasses.field(default_factory=list)

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


def _cached_model(path: Path, expected: dict[str, object], log: Callable[[str], None]) -> Optional[HookedModel]:
    """The model cached at ``path`` if it loads and was trained from ``expected``; None (a miss) otherwise."""
    if not path.exists():
        return None
    try:
        model = HookedModel.load(path)
    except (HookedMLPError, OSError) as e:  # truncated, corrupt, edited: retrain it
        log(f"  cache: {path.name} cannot be loaded ({type(e).__name__}); retraining it")
        return None
    found = {k: model.meta.get(k) for k in expected}
    same = json.dumps(found, sort_keys=True, default=list) == json.dumps(expected, sort_keys=True, default=list)
    return model if same else None


def cell_files(
    variant: Variant, seed: int, cache: Path, settings: TrainSettings, train_data: Optional[tuple[Tensor, ...]]
) -> tuple[TrainSettings, Path, Path]:
    """A cell's training settings (its seed and the variant's weight decay), and its model's and result's paths."""
    settings = dataclasses.replace(settings, seed=seed, weight_decay=variant.weight_decay)
    dataset = "mnist" if train_data is None else f"given ({len(train_data[0])} training images)"
    stem = f"{variant.slug}-seed{seed}-{_key(variant, settings, dataset)}"
    return settings, cache / f"{stem}.pt", cache / f"{stem}.json"


def cached_model(variant: Variant, settings: TrainSettings, path: Path, log: Callable[[str], None]) -> Any:
    """The model cached at ``path`` if it was trained from this variant and these settings; None (a miss) otherwise."""
    expected = {"recipe": config_to_dict(variant.recipe), "settings": dataclasses.asdict(settings)}
    return _cached_model(path, expected, log)


def _train(
    variant: Variant,
    seed: int,
    path: Path,
    data: Optional[tuple[Tensor, ...]],
    settings: TrainSettings,
    log: Callable[[str], None] = print,
    device: Union[str, torch.device] = "cpu",
    seconds: float = 0.0,
) -> tuple[HookedModel, float]:
    cached = cached_model(variant, settings, path, log)
    if cached is not None:
        return cached, seconds
    partial_path(path).unlink(missing_ok=True)  # the cache's own: an interrupted study's last epoch
    start = time.perf_counter()
    result = train_model(
        variant.recipe,
        settings,
        out=path,
        data=data,
        device=device,
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


def unique(values: Sequence[object], what: str) -> None:
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
    device: Union[str, torch.device] = "cpu",
    trained_seconds: float = 0.0,
    property_per_class: int = PROPERTY_PER_CLASS,
    vectors: bool = True,
) -> ModelResult:
    """Train (or load from ``cache``) one model of the family and analyse it at every hook point, on ``device``.

    The analysis runs with torch's current intra-op threads, which the result's cache key records (the last bits
    of the numbers depend on them). ``trained_seconds``: what training took where the model was trained before this
    call (its seeds together), recorded in place of 0 for a model found in the cache. Its properties are measured
    on the first ``property_per_class`` training images of each digit (of ``train_data`` when given). ``vectors``:
    also score every source of ``VECTORS`` at the internal hook classes (``ModelResult.vectors``).
    """
    property_set = _property_set(train_data, property_per_class)
    settings, model_path, result_path = cell_files(variant, seed, cache, settings, train_data)
    model, train_seconds = _train(variant, seed, model_path, train_data, settings, log, device, trained_seconds)
    steer_settings = SteerSettings(c_min=min(coeffs), c_max=max(coeffs))
    key = {
        "sha256": sha256_file(model_path),
        "analysis": analysis_version(),  # measured by this code: never another definition
        "steer_settings": dataclasses.asdict(steer_settings),
        "n_test": len(test[1]),
        "n_properties": len(property_set[1]),
        "pairs": None if pairs is None else [list(p) for p in pairs],
        "threads": torch.get_num_threads(),
        "vectors": [list(v) for v in VECTORS] if vectors else [],
    }
    cached = _cached_result(result_path, key, log)
    if cached is not None:
        return cached
    start = time.perf_counter()
    model.eval().to(device)
    test = (test[0].to(device), test[1].to(device))
    model.meta["dataset"] = "mnist"  # the family is trained on MNIST (all of it, or a subset for quick runs)
    test_loss, test_acc = evaluate(model, *test)
    with torch.no_grad():
        steer = steerability(model, test, pairs=pairs, settings=steer_settings)
        rows = _vector_rows(model, test, steer, steer_settings) if vectors else []
    props = model_properties(model, property_set, test, pairs=steer.pairs)
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
        _joined(steer, props.table()),
        rows,
    )
    with atomic_write(result_path, "w") as f:
        numbers = dataclasses.asdict(result)
        # the full steerability (every site and pair): what later measurements join on
        json.dump({**key, "result": numbers, "digest": _digest(numbers), "steerability": steer.to_dict()}, f)
    return result


def _property_set(
    train_data: Optional[tuple[Tensor, ...]], per_class: int = PROPERTY_PER_CLASS
) -> tuple[Tensor, Tensor]:
    """The first ``per_class`` training images of each digit (of ``train_data`` when given)."""
    images, labels = (train_data[0], train_data[1]) if train_data is not None else load_mnist("train")
    return stratified_subset(images, labels, per_class)


def _vector_rows(model: HookedModel, test: Any, steer: Steerability, settings: SteerSettings) -> list[dict[str, Any]]:
    """Each vector source's pAUC (all scoring images) at each internal hook class, per pair; the first is ``steer``."""
    rows = []
    for i, (_, method, exemplar) in enumerate(VECTORS):
        st = (
            steer
            if i == 0
            else steerability(model, test, steer.pairs, method, exemplar, settings=settings, only_internal=True)
        )
        for s in st.internal:
            for p, (a, b) in enumerate(st.pairs):
                rows.append(
                    {
                        "source": i,
                        "site": s.name,
                        "a": a,
                        "b": b,
                        "pauc": round(float(s.metrics["pauc"][p]), 6),
                    }
                )
    return rows


def _joined(steer: Steerability, properties: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each hook class's scores per pair (``STEER_COLUMNS``) beside its properties, rounded to 6 digits."""
    scores = {(r["site"], r["a"], r["b"]): r for r in steer.table() if r["kind"] == "class"}
    return [
        {
            **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()},
            **{m: round(scores[(row["site"], row["a"], row["b"])][m], 6) for m in STEER_COLUMNS},
        }
        for row in properties
    ]


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


def headline(r: ModelResult) -> str:
    """The best internal class's pAUC (scoring half) beside the controls', for the progress line."""
    best, ctl = best_internal(r.steer), controls(r.steer, "pauc_score")
    where = f"pAUC {best['pauc_score']:.2f} at {best['name']}" if best is not None else "no internal class"
    return f"{where} (logit class {ctl['logit class']:.2f}, bias {ctl['bias']:.2f}, pixel {ctl['pixel']:.2f})"
