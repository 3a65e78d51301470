"""Several seeds of one recipe trained together, as one stacked network (``hookedmlp.models.stacked``).

Each seed keeps everything it has when trained alone by ``train_model``: its initial weights
(the global RNG seeded with it, then the model built), its own batch order (a generator seeded
with it), its own dropout masks (a generator holding the global RNG's state right after its
initialisation, as the lone run's dropout draws from), and AdamW's arithmetic, elementwise on
the stacked tensors. Only the dispatch is shared: each step runs each layer once for all seeds.

What it guarantees: with ``settings.threads == 1``, seed ``s`` trained in a batch has the same
weights, bit for bit, as ``train_model(recipe, replace(settings, seed=s))`` on the same CPU
(``tests/test_train_seeds.py`` checks every architecture of the study, dropout and LayerNorm
included). With more threads the lone run splits its matrix products differently, and the two
differ in the last bits, which training then amplifies, as any change of thread count does;
each checkpoint records ``meta["batched_seeds"]`` so that such a model is never taken for the
lone one. On CUDA the dropout masks come from per-seed CUDA generators, not the kernel the lone
run uses, so recipes with dropout differ there.
"""

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from hookedmlp.checks import check_int
from hookedmlp.errors import ConfigError
from hookedmlp.hooks.root import HookedRoot
from hookedmlp.models.configs import MLPConfig, Recipe
from hookedmlp.models.stacked import StackedNet
from hookedmlp.sizes import check_bytes, recipe_bytes
from hookedmlp.train import (
    Run,
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    TrainSettings,
    _plain,
    on_device,
    optimiser,
    seeded_model,
    threads,
    training_data,
)
from hookedmlp.train_files import RunFiles

__all__ = ["train_seeds", "SeedsInterrupted", "check_seeds"]

PathLike = Union[str, "os.PathLike[str]"]


class SeedsInterrupted(TrainingInterrupted):
    """Ctrl-C while seeds trained together: each seed's files were kept as ``TrainingInterrupted`` says."""

    def __init__(self, seeds: Sequence[int], errors: Sequence[TrainingInterrupted]) -> None:
        super().__init__(errors[0].epochs_done, errors[0].epochs, errors[0].files)
        self.seeds, self.errors = list(seeds), list(errors)

    def __str__(self) -> str:
        return "; ".join(f"seed {s}: {e}" for s, e in zip(self.seeds, self.errors))


def check_seeds(seeds: Any) -> list[int]:
    """``seeds`` as a list of distinct seeds, at least one; ``ConfigError`` otherwise."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ConfigError(f"seeds must be a non-empty list of ints, got {seeds!r}")
    out = [check_int(s, "seed", low=0, high=2**63) for s in seeds]
    repeated = sorted({s for s in out if out.count(s) > 1})
    if repeated:
        raise ConfigError(
            f"seeds repeat ({', '.join(map(str, repeated))}): each would be the same model; give each once"
        )
    return out


def _dropout_generator(device: Union[str, torch.device], seed: int) -> torch.Generator:
    """Where the lone run's dropout masks come from: the global RNG's state right after its initialisation."""
    if torch.device(device).type == "cpu":
        gen = torch.Generator()
        gen.set_state(torch.get_rng_state())
        return gen
    return torch.Generator(device=device).manual_seed(seed)


def train_seeds(
    recipe: Optional[Recipe] = None,
    settings: Optional[TrainSettings] = None,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    outs: Optional[Sequence[Optional[PathLike]]] = None,
    data: Any = None,
    root: Optional[PathLike] = None,
    device: Union[str, torch.device] = "cpu",
    progress: bool = True,
    command: Optional[str] = None,
) -> list[TrainResult]:
    """Train one model of ``recipe`` per seed, all together as one stacked network; one result per seed.

    Each seed gets the initial weights, batch order and dropout masks ``train_model`` would give
    it (``settings.seed`` is replaced by each of ``seeds``), and, at one thread, the same weights
    bit for bit (see the module's docs). Every check ``train_model`` makes is made here first,
    for every seed: the data, the memory all the seeds need together, and every file.

    Args:
        recipe: the architecture (default: the study's 784-512-512-10 ReLU net).
        settings: optimiser settings and threads, shared by every seed.
        seeds: the seeds, each once.
        outs: one checkpoint path per seed (or ``None`` for a seed not to save), written as
            ``train_model`` writes its ``out``: at the end, only if finite; epochs go to partial files.
        data: ``(train_x, train_y, test_x, test_y)`` instead of MNIST.
        root: MNIST directory (see ``hookedmlp.data.prepare_mnist``).
        device: where to train.
        progress: show one progress bar for the batch.
        command: the command line to record (default: ``sys.argv``).

    Returns:
        One ``TrainResult`` per seed, in the order of ``seeds``; ``seconds`` is the batch's wall time.

    Examples:
        >>> x, y = torch.rand(8, 4), torch.arange(8) % 2
        >>> tiny_recipe = MLPConfig(d_in=4, d_hidden=(3,), d_out=2)
        >>> results = train_seeds(tiny_recipe, TrainSettings(epochs=2, batch_size=4), seeds=[0, 1],
        ...                       data=(x, y, x, y), progress=False)
        >>> [r.model.meta["settings"]["seed"] for r in results]
        [0, 1]
    """
    recipe = MLPConfig() if recipe is None else recipe
    settings = settings or TrainSettings()
    seeds = check_seeds(seeds)
    if settings.target_loss is not None:
        raise ConfigError(
            f"settings.target_loss={settings.target_loss:g} stops each seed at its own step, and train_seeds steps "
            "the seeds in lockstep; train them one at a time (hookedmlp.train_model), or leave target_loss None"
        )
    outs = [None] * len(seeds) if outs is None else list(outs)
    if len(outs) != len(seeds):
        raise ConfigError(f"outs needs one path (or None) per seed: {len(seeds)} seeds, got {len(outs)} paths")
    named = [os.path.realpath(o) for o in outs if o is not None]
    if len(set(named)) != len(named):
        raise ConfigError("outs repeat a path: two seeds would write one checkpoint; give each seed its own")
    files = [RunFiles.check(o, None) for o in outs]
    check_bytes(
        len(seeds) * recipe_bytes(recipe, settings.batch_size, training=True),
        f"training {len(seeds)} seeds of a {recipe.summary} together in batches of {settings.batch_size}",
        "train fewer seeds together, or use a smaller recipe or batch size",
    )
    data, dataset = training_data(recipe, data, root)
    runs = [
        Run(recipe, dataclasses.replace(settings, seed=s), f, command, dataset, extra={"batched_seeds": seeds})
        for s, f in zip(seeds, files)
    ]
    with threads(settings.threads):
        models, seconds = _train_together(runs, data, device, progress)
    results = []
    for run, model in zip(runs, models):
        model.meta = run.meta()
        run.files.finish(model)
        results.append(run.result(model, seconds))
    return results


def _train_together(
    runs: list[Run], data: tuple[Tensor, Tensor, Tensor, Tensor], device: Union[str, torch.device], progress: bool
) -> tuple[list[HookedRoot], float]:
    """The lone loop of ``hookedmlp.train``, each layer run once for every seed; the models (eval mode), seconds."""
    settings, seeds = runs[0].settings, [run.settings.seed for run in runs]
    models, masks = [], []
    for seed in seeds:
        models.append(seeded_model(runs[0].recipe, seed, device))
        masks.append(_dropout_generator(device, seed))
    stack = StackedNet([_plain(m) for m in models], masks)
    train_x, train_y, test_x, test_y = on_device(models[0], data, device)
    orders = [torch.Generator().manual_seed(seed) for seed in seeds]
    opt, sched = optimiser(stack.seed_parameters(), settings, len(train_x))
    n, bs = len(train_x), settings.batch_size
    start = time.perf_counter()
    bar = tqdm(total=sched.T_max, desc=f"train {len(seeds)} seeds", unit="step", disable=not progress)
    try:
        for _ in range(settings.epochs):
            stack.train()
            order = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)
            for i in range(0, n, bs):
                idx = order[:, i : i + bs].flatten()  # index_select: a third of advanced indexing's time
                x, y = train_x.index_select(0, idx), train_y.index_select(0, idx).view(len(seeds), -1)
                logits = stack(x.view(len(seeds), -1, *x.shape[1:]))
                stack.zero_grad(set_to_none=True)
                # one cross-entropy for every seed: each row's log-softmax is the lone run's, and each seed's mean
                # gives every example the lone gradient, -1/batch (1/batch rounded once in both); the loss a seed
                # reports is its own F.cross_entropy, computed from the last batch only (end of the epoch)
                per_example = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
                per_example.view(len(seeds), -1).mean(1).sum().backward()
                stack.share_grads()
                opt.step()
                sched.step()
                bar.update(1)
            stack.write_back()
            with torch.no_grad():
                losses = [F.cross_entropy(logits[s], y[s]) for s in range(len(seeds))]
            for seed, run, model, loss in zip(seeds, runs, models, losses):
                try:
                    run.end_epoch(model, loss, (test_x, test_y), time.perf_counter() - start)
                except TrainingDiverged as e:
                    raise TrainingDiverged(f"seed {seed} (trained with seeds {seeds}): {e}", e.result) from None
    except KeyboardInterrupt:
        errors = [TrainingInterrupted(len(run.history), settings.epochs, run.files) for run in runs]
        raise SeedsInterrupted(seeds, errors) from None
    finally:
        bar.close()
    return [m.eval() for m in models], time.perf_counter() - start
