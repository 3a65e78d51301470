"""hookedmlp side by side with TransformerLens, nnsight, pyvene and torchlens on the study's MLP (issue 10).

Run (the peers are in the optional ``bench`` extra; see docs/performance.md for the install):
    python bench/bench_peers.py [--rounds 21] [--grid-rounds 3] [--skip-grid | --skip-table]

Part 1, issue 10's table: the time per call of each path as a ratio to the bare nn.Sequential,
measured in the same round (median over ``--rounds`` interleaved rounds; 2 threads):
  - steering at layer0.post, batch 1: ``with model.steer(vec): model(x)`` and each peer's idiom;
  - one hook, batch 1: ``with model.hooks(...): model(x)``, TransformerLens' ``hooks()``, a PyTorch hook;
  - caching every hook point, batch 10,000, with the memory the returned cache holds.
Part 2, the 10 x 10 grid at layer0.post over the 10,000 MNIST test images: ours
(``analysis.steering_grid``) vs each peer's idiomatic loop of 100 full steered passes and the
plain loop (a PyTorch forward hook), their loss and flip-rate grids checked to agree within 1e-4.

Every peer adds exactly the same vectors (``model.steering_vector(a, b, "layer0.post")``) to the
first Linear's output of the same weights. A peer that cannot be imported is reported with the
reason and left out.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from _timing import per_call
from torch import nn

from hookedmlp import HookedMLP
from hookedmlp.data import load_mnist
from hookedmlp_analysis import steering_grid

HOOK = "layer0.post"


# -- the peers: each builds its own view of the same nn.Sequential ---------------------------------


def tl_model(seq: nn.Sequential) -> Any:
    """The idiomatic TransformerLens wrapper: a HookPoint after the input and after every module."""
    from transformer_lens import HookedRootModule
    from transformer_lens.hook_points import HookPoint

    class TLMLP(HookedRootModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = seq
            self.hook_in = HookPoint()
            self.hook_out = nn.ModuleList([HookPoint() for _ in seq[1:]])
            self.setup()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.hook_in(self.net[0](x))  # the Flatten
            for module, hook in zip(self.net[1:], self.hook_out):
                x = hook(module(x))
            return x

    return TLMLP().eval()


def nnsight_model(seq: nn.Sequential) -> Any:
    from nnsight import NNsight

    return NNsight(seq)


def pyvene_model(seq: nn.Sequential, intervention: Any) -> Any:
    import pyvene as pv
    import transformers

    if not hasattr(seq, "config"):
        seq.config = transformers.PretrainedConfig()  # pyvene reads model.config
    if isinstance(intervention, list):
        reps = [{"component": f"{i}.output", "intervention": pv.CollectIntervention()} for i in intervention]
    else:
        reps = [
            {
                "component": "1.output",
                "intervention": pv.AdditionIntervention(source_representation=intervention, embed_dim=512),
            }
        ]
    model = pv.IntervenableModel(pv.IntervenableConfig(representations=reps), model=seq)
    model.disable_model_gradients()
    return model


def available() -> dict[str, str]:
    """Each peer's version, or why it cannot be used here."""
    found = {}
    for name, module in (
        ("TransformerLens", "transformer_lens"),
        ("nnsight", "nnsight"),
        ("pyvene", "pyvene"),
        ("torchlens", "torchlens"),
    ):
        try:
            mod = __import__(module)
            from importlib.metadata import version

            found[name] = version({"transformer_lens": "transformer-lens"}.get(module, module))
            del mod
        except Exception as e:  # an optional peer: report and go on without it
            found[name] = f"unavailable ({type(e).__name__}: {e})"
    return found


# -- timing ----------------------------------------------------------------------------------------


def table(cases: dict[str, dict[str, tuple[Callable[[], Any], int]]], rounds: int) -> dict[str, dict[str, list[float]]]:
    """For each case and tool, the per-round ratio to the case's "nn.Sequential" time, rounds interleaved."""
    ratios = {c: {t: [] for t in tools} for c, tools in cases.items()}
    times = {c: {t: [] for t in tools} for c, tools in cases.items()}
    for tools in cases.values():  # two unrecorded rounds: first-call costs, the allocator, caches
        for _ in range(2):
            for fn, inner in tools.values():
                per_call(fn, inner)
    for r in range(rounds):
        for case, tools in cases.items():
            order = list(tools.items())
            measured = {}
            for tool, (fn, inner) in order if r % 2 == 0 else order[::-1]:  # alternate the order
                measured[tool] = per_call(fn, inner)
            base = measured[order[0][0]]
            for tool, t in measured.items():
                times[case][tool].append(t)
                ratios[case][tool].append(t / base)
    return {"ratio": ratios, "time": times}


def cache_mb(cache: Any) -> float:
    """Distinct storages held by a returned cache (a dict, a list, nnsight's saved values, a torchlens trace)."""
    tensors = list(cache.values()) if hasattr(cache, "values") else list(cache)
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if isinstance(t, torch.Tensor)
    }
    return sum(storages.values()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--grid-rounds", type=int, default=3)
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peers = available()
    have = {k for k, v in peers.items() if not v.startswith("unavailable")}

    model = HookedMLP.from_pretrained("mnist-mlp").eval()
    seq = model.to_sequential().eval()  # the same modules: Flatten, Linear, ReLU, Linear, ReLU, Linear
    vec = model.steering_vector(3, 1, HOOK)
    v = vec[HOOK]
    x1 = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x10k = load_mnist("test")[0]

    def add_v(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return act + v

    def torch_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output + v

    def plain_hooked(x: torch.Tensor) -> torch.Tensor:
        handle = seq[1].register_forward_hook(torch_hook)
        try:
            return seq(x)
        finally:
            handle.remove()

    def ours_steer() -> torch.Tensor:
        with model.steer(vec):
            return model(x1)

    def ours_hooks() -> torch.Tensor:
        with model.hooks(fwd_hooks=[(HOOK, add_v)]):
            return model(x1)

    steer_cases: dict[str, tuple[Callable[[], Any], int]] = {
        "nn.Sequential": (lambda: seq(x1), 400),
        "hookedmlp steer()": (ours_steer, 400),
        "PyTorch forward hook": (lambda: plain_hooked(x1), 400),
    }
    hook_cases: dict[str, tuple[Callable[[], Any], int]] = {
        "nn.Sequential": (lambda: seq(x1), 400),
        "hookedmlp hooks()": (ours_hooks, 400),
        "PyTorch forward hook": (lambda: plain_hooked(x1), 400),
    }
    holders: dict[str, Any] = {}

    def keep(name: str, value: Any) -> Any:
        holders[name] = value  # the last cache of each tool stays alive until it is measured
        return value

    def plain_cache(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        handles = [
            m.register_forward_hook(lambda mod, i, o, k=k: out.__setitem__(str(k), o.detach()))
            for k, m in enumerate(seq)
        ]
        try:
            seq(x)
        finally:
            for h in handles:
                h.remove()
        return out

    cache_cases: dict[str, tuple[Callable[[], Any], int]] = {
        "nn.Sequential": (lambda: seq(x10k), 2),
        "hookedmlp run_with_cache": (lambda: keep("hookedmlp run_with_cache", model.run_with_cache(x10k)[1]), 2),
        "PyTorch forward hooks": (lambda: keep("PyTorch forward hooks", plain_cache(x10k)), 2),
    }

    if "TransformerLens" in have:
        tlm = tl_model(seq)

        def tl_hooks() -> torch.Tensor:
            with tlm.hooks(fwd_hooks=[("hook_out.0", add_v)]):
                return tlm(x1)

        steer_cases["TransformerLens run_with_hooks"] = (
            lambda: tlm.run_with_hooks(x1, fwd_hooks=[("hook_out.0", add_v)]),
            400,
        )
        hook_cases["TransformerLens hooks()"] = (tl_hooks, 400)
        cache_cases["TransformerLens run_with_cache"] = (
            lambda: keep("TransformerLens run_with_cache", tlm.run_with_cache(x10k)[1]),
            2,
        )
    if "nnsight" in have:
        nm = nnsight_model(seq)

        def nn_steer() -> torch.Tensor:
            with nm.trace(x1):
                nm[1].output = nm[1].output + v
                out = nm.output.save()
            return out

        def nn_cache() -> list:
            saved = []
            with nm.trace(x10k):
                for i in range(6):
                    saved.append(nm[i].output.save())
            return keep("nnsight trace + save", saved)

        steer_cases["nnsight trace"] = (nn_steer, 40)
        cache_cases["nnsight trace + save"] = (nn_cache, 2)
    if "pyvene" in have:
        pv_steer = pyvene_model(seq, v)
        pv_collect = pyvene_model(seq, list(range(6)))
        steer_cases["pyvene IntervenableModel"] = (lambda: pv_steer(base={"input": x1})[1], 40)
        cache_cases["pyvene CollectIntervention"] = (
            lambda: keep("pyvene CollectIntervention", pv_collect(base={"input": x10k})[0][1]),
            2,
        )
    if "torchlens" in have:
        import torchlens

        def tlens() -> Any:
            trace = torchlens.trace(seq, x10k)
            return keep("torchlens trace", [layer.out for layer in trace.layers])

        cache_cases["torchlens trace"] = (tlens, 1)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; peers: "
        + "; ".join(f"{k} {v}" for k, v in peers.items())
    )
    if args.skip_table:
        grid(model, seq, have, args.grid_rounds)
        return
    with torch.no_grad():
        check_agreement(model, seq, vec, x1, steer_cases)
        measured = {}
        for title, cases in (
            ("steering at layer0.post, batch 1, per call", steer_cases),
            ("one hook at layer0.post, batch 1, per call", hook_cases),
        ):
            measured[title] = table({title: cases}, args.rounds)
        measured["caching every hook point, batch 10,000"] = table({"cache": cache_cases}, max(3, args.rounds // 3))
    for title, result in measured.items():
        case = next(iter(result["ratio"]))
        print(f"\n{title} (median of {len(next(iter(result['ratio'][case].values())))} interleaved rounds)")
        print(
            f"  {'tool':<34}{'time':>12}{'ratio to nn.Sequential':>26}"
            + ("" if "cach" not in title else f"{'cache holds':>14}")
        )
        for tool, ratios in result["ratio"][case].items():
            t = statistics.median(result["time"][case][tool])
            held = f"{cache_mb(holders[tool]):>11.0f} MB" if tool in holders else ""
            print(f"  {tool:<34}{t * 1e3:>10.3f}ms{statistics.median(ratios):>26.2f}{held:>14}")
    if not args.skip_grid:
        grid(model, seq, have, args.grid_rounds)


def check_agreement(
    model: HookedMLP, seq: nn.Sequential, vec: Any, x: torch.Tensor, cases: dict[str, tuple[Callable[[], Any], int]]
) -> None:
    """Every steering path computes the same logits (within 1e-5) before anything is timed."""
    expected = seq[5](seq[4](seq[3](seq[2](seq[1](seq[0](x)) + vec[HOOK]))))
    for tool, (fn, _) in cases.items():
        if tool != "nn.Sequential":
            got = fn()
            err = float((got - expected).abs().max())
            if err > 1e-5:
                raise SystemExit(f"{tool} disagrees with the reference by {err:.3g}")


# -- part 2: the 10 x 10 grid --------------------------------------------------------------------


def scores(logits: torch.Tensor, labels: torch.Tensor, a: int, b: int) -> tuple[float, float]:
    """The study's loss (mean cross-entropy over the images not of class b) and flip rate (b images now a)."""
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    is_b = labels == b
    return float(ce[~is_b].mean()), float((logits[is_b].argmax(-1) == a).float().mean())


def grid(model: HookedMLP, seq: nn.Sequential, have: set[str], rounds: int) -> None:
    images, labels = load_mnist("test")
    digits = range(10)
    vectors = {(a, b): model.steering_vector(a, b, HOOK)[HOOK] for a in digits for b in digits}

    def loop(steered: Callable[[torch.Tensor], torch.Tensor]) -> dict[tuple[int, int], tuple[float, float]]:
        return {(a, b): scores(steered(vectors[a, b]), labels, a, b) for a in digits for b in digits}

    def plain(vector: torch.Tensor) -> torch.Tensor:
        handle = seq[1].register_forward_hook(lambda m, i, o: o + vector)
        try:
            return seq(images)
        finally:
            handle.remove()

    def ours_loop(vector: torch.Tensor) -> torch.Tensor:
        with model.hooks(fwd_hooks=[(HOOK, lambda act, hook: act + vector)]):
            return model(images)

    ways: dict[str, Callable[[], Any]] = {
        "hookedmlp steering_grid": lambda: steering_grid(model, hook=HOOK, test=(images, labels)),
        "plain loop (PyTorch forward hook)": lambda: loop(plain),
        "hookedmlp loop (model.hooks)": lambda: loop(ours_loop),
    }
    if "TransformerLens" in have:
        tlm = tl_model(seq)
        ways["TransformerLens loop (run_with_hooks)"] = lambda: loop(
            lambda vector: tlm.run_with_hooks(images, fwd_hooks=[("hook_out.0", lambda act, hook: act + vector)])
        )
    if "nnsight" in have:
        nm = nnsight_model(seq)

        def nn_steered(vector: torch.Tensor) -> torch.Tensor:
            with nm.trace(images):
                nm[1].output = nm[1].output + vector
                out = nm.output.save()
            return out

        ways["nnsight loop (trace)"] = lambda: loop(nn_steered)
    if "pyvene" in have:
        ways["pyvene loop (IntervenableModel)"] = lambda: loop(
            lambda vector: pyvene_model(seq, vector)(base={"input": images})[1]
        )
    times: dict[str, list[float]] = {w: [] for w in ways}
    results: dict[str, Any] = {}
    with torch.no_grad():
        for _ in range(rounds):
            for way, fn in ways.items():
                t = time.perf_counter()
                results[way] = fn()
                times[way].append(time.perf_counter() - t)
    ours = results["hookedmlp steering_grid"]
    reference = {
        (a, b): (float(ours.loss[i, j]), float(ours.flip_rate[i, j]))
        for i, a in enumerate(digits)
        for j, b in enumerate(digits)
    }
    base = statistics.median(times["hookedmlp steering_grid"])
    print(f"\n10 x 10 grid at {HOOK} over {len(labels)} test images (median of {rounds} interleaved rounds)")
    print(f"  {'way':<40}{'time':>10}{'vs ours':>10}{'max |loss diff|':>18}{'max |flip diff|':>18}")
    for way in ways:
        t = statistics.median(times[way])
        if way == "hookedmlp steering_grid":
            dl = df = 0.0
        else:
            dl = max(abs(results[way][k][0] - reference[k][0]) for k in reference)
            df = max(abs(results[way][k][1] - reference[k][1]) for k in reference)
            if dl > 1e-4 or df > 1e-4:
                raise SystemExit(f"{way} disagrees with steering_grid: loss by {dl:.3g}, flip rate by {df:.3g}")
        print(f"  {way:<40}{t:>9.2f}s{t / base:>9.2f}x{dl:>18.2e}{df:>18.2e}")
    print("  agreement: every loop's loss and flip-rate grids are within 1e-4 of steering_grid's")


if __name__ == "__main__":
    main()
