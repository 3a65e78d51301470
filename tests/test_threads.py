"""Two forward passes never share one cache (issue 10, point 3): threads, hooks that call the model,
nested run_with_cache; and what is model-wide across threads (hooks, steering) by design."""

import threading

import pytest
import torch

from hookedmlp import SteeringVector

N_CALLS = 100  # per thread: 200 caches (the race this guards against hit 6% of them)


def reference(seq, x):
    """Every hook point's activation, module by module (plain torch)."""
    acts, h = {"layer0.pre": x}, x
    for i, m in enumerate(seq):
        if i:
            acts[f"layer{i}.pre"] = h
        h = m(h)
        acts[f"layer{i}.post"] = h
    return {k: v.detach() for k, v in acts.items()}


def run_threads(*targets):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # a failed assertion in a thread must fail the test
                errors.append(e)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_two_threads_200_caches_each_hold_only_their_own_pass(tiny, tiny_seq, tiny_x):
    inputs = [tiny_x, tiny_x.flip(0) + 1.0]
    with torch.no_grad():
        expected = [reference(tiny_seq, x) for x in inputs]
    start = threading.Barrier(2)
    wrong = [[], []]

    def worker(k):
        def run():
            start.wait()
            for i in range(N_CALLS):
                _, cache = tiny.run_with_cache(inputs[k])
                if list(cache) != tiny.hook_names or any(not torch.equal(cache[n], expected[k][n]) for n in cache):
                    wrong[k].append(i)

        return run

    run_threads(worker(0), worker(1))
    assert wrong == [[], []], f"caches holding the other thread's activations: {wrong}"
    assert tiny.attached_hooks() == []


def test_plain_passes_in_another_thread_never_reach_a_cache(tiny, tiny_seq, tiny_x):
    noise = torch.rand(7, 16, generator=torch.Generator().manual_seed(3))
    expected = reference(tiny_seq, tiny_x)
    stop = threading.Event()
    wrong = []

    def plain():
        with torch.no_grad():
            while not stop.is_set():
                tiny(noise)

    def caching():
        try:
            for _ in range(N_CALLS):
                _, cache = tiny.run_with_cache(tiny_x, names_filter="*.post")
                if any(not torch.equal(cache[n], expected[n]) for n in cache):
                    wrong.append(1)
        finally:
            stop.set()

    run_threads(plain, caching)
    assert wrong == []


def test_a_hook_that_runs_the_model_does_not_fill_the_outer_cache(tiny, tiny_seq, tiny_x):
    other = tiny_x * 3.0
    inner_outputs = []

    def calls_the_model(act, hook):
        if not inner_outputs:  # the hook runs in the inner pass too: only the outer one calls the model
            inner_outputs.append(None)
            inner_outputs[0] = tiny(other)  # a whole second pass, from inside the first

    with tiny.hooks(fwd_hooks=[("layer2.post", calls_the_model)]):
        out, cache = tiny.run_with_cache(tiny_x)
    expected = reference(tiny_seq, tiny_x)
    assert all(torch.equal(cache[n], expected[n]) for n in tiny.hook_names)
    assert torch.equal(out, tiny_seq(tiny_x))
    assert torch.equal(inner_outputs[0], tiny_seq(other))


def test_nested_run_with_cache_keeps_each_cache_to_its_own_pass(tiny, tiny_seq, tiny_x):
    other = tiny_x.flip(1)
    inner = {}

    def nested(act, hook):
        if not inner:
            inner["busy"] = True
            inner["out"], inner["cache"] = tiny.run_with_cache(other, names_filter=["layer0.pre", "layer3.post"])

    with tiny.hooks(fwd_hooks=[("layer1.post", nested)]):
        _, outer = tiny.run_with_cache(tiny_x)
    expected, expected_inner = reference(tiny_seq, tiny_x), reference(tiny_seq, other)
    assert all(torch.equal(outer[n], expected[n]) for n in tiny.hook_names)
    assert list(inner["cache"]) == ["layer0.pre", "layer3.post"]
    assert all(torch.equal(inner["cache"][n], expected_inner[n]) for n in inner["cache"])
    assert tiny.attached_hooks() == []


def test_a_hook_that_caches_its_own_pass_from_inside(tiny, tiny_seq, tiny_x):
    # run_with_cache called by a hook *of the same pass* starts a second pass: it never records the first
    seen = {}

    def cache_again(act, hook):
        if not seen:
            seen["busy"] = True
            seen["cache"] = tiny.run_with_cache(tiny_x * 0, names_filter="layer4.post")[1]

    with tiny.hooks(fwd_hooks=[("layer0.post", cache_again)]):
        tiny.run_with_cache(tiny_x)
    assert torch.equal(seen["cache"]["layer4.post"], tiny_seq(tiny_x * 0).detach())


# -- model-wide by design: hooks and steering reach every thread's passes ---------------------------------


def test_steering_is_model_wide_across_threads(tiny, tiny_seq, tiny_x):
    vec = SteeringVector({"layer4.post": torch.tensor([1.0, 0.0, -1.0])})
    entered, done = threading.Event(), threading.Event()
    got = {}

    def steering():
        with tiny.steer(vec):
            entered.set()
            done.wait(timeout=60)

    def other():
        entered.wait(timeout=60)
        with torch.no_grad():
            got["out"] = tiny(tiny_x)
            got["clean"] = tiny.clean_activations(tiny_x, ["layer4.post"])["layer4.post"]
        done.set()

    run_threads(steering, other)
    with torch.no_grad():
        plain = tiny_seq(tiny_x)
    assert torch.equal(got["out"], plain + torch.tensor([1.0, 0.0, -1.0]))  # the other thread was steered too
    assert torch.equal(got["clean"], plain)  # a clean pass is clean in its own thread, whatever others attach
    assert tiny.attached_hooks() == []


@pytest.mark.parametrize("in_thread", [True, False])
def test_a_cache_sees_the_hooks_of_every_thread_but_only_its_own_pass(tiny, tiny_seq, tiny_x, in_thread):
    # Hooks are model-wide: a hook attached in one thread edits the pass another thread caches.
    attached, done = threading.Event(), threading.Event()
    got = {}

    def hooking():
        with tiny.hooks(fwd_hooks=[("layer1.post", lambda a, hook: a * 0)]):
            attached.set()
            done.wait(timeout=60)

    def caching():
        attached.wait(timeout=60)
        got["cache"] = tiny.run_with_cache(tiny_x, names_filter=["layer1.post", "layer2.post"])[1]
        done.set()

    if in_thread:
        run_threads(hooking, caching)
    else:
        with tiny.hooks(fwd_hooks=[("layer1.post", lambda a, hook: a * 0)]):
            got["cache"] = tiny.run_with_cache(tiny_x, names_filter=["layer1.post", "layer2.post"])[1]
    assert torch.equal(got["cache"]["layer1.post"], torch.zeros(5, 8))
    assert torch.equal(got["cache"]["layer2.post"], tiny_seq[2](torch.zeros(5, 8)).detach())
    assert tiny.attached_hooks() == []
