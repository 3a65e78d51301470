"""Hypothesis properties of steering and interventions on the tiny seeded model:

* any nesting of steer / ablate / patch / clamp contexts (with bad arguments and
  exceptions raised at random depths, caught at random depths) computes what a plain
  module-by-module reference computes at every level, leaves exactly the hooks of the
  still-open contexts attached, and finally leaves the model with no hooks (a user's
  permanent hook excepted) and its original outputs bit for bit;
* steering with ``c1 * v`` inside ``c2 * v`` equals steering with ``(c1 + c2) * v``.

The model is built inside each example (hypothesis and function-scoped fixtures do
not mix); it is the ``tiny`` model of conftest.py.
"""

import functools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from hookedmlp import HookedMLP, HookedMLPError, SteeringVector

HOOKS = [f"layer{i}.{p}" for i in range(5) for p in ("pre", "post")]
WIDTHS = {name: 16 if name == "layer0.pre" else 3 if name == "layer4.post" else 8 for name in HOOKS}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
finite = st.floats(min_value=-5, max_value=5, allow_nan=False, allow_infinity=False)


def build():
    """conftest's ``tiny_seq`` / ``tiny`` (same seed), without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        seq = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    for p in seq.parameters():
        p.requires_grad_(False)
    return HookedMLP.from_sequential(seq).eval(), seq


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.rand(5, 16, generator=g), torch.rand(16, generator=g), torch.rand(16, generator=g)


def rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def reference(seq, x, edits):
    """Plain torch, module by module, applying ``edits`` ((hook, fn) in attachment order)."""
    h = x
    for i, m in enumerate(seq):
        for name, fn in edits:
            if name == f"layer{i}.pre":
                h = fn(h)
        h = m(h)
        for name, fn in edits:
            if name == f"layer{i}.post":
                h = fn(h)
    return h


def check(model, seq, x, edits):
    out = model(x)
    ref = reference(seq, x, edits)
    if edits:
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(out, ref)


# -- strategies -----------------------------------------------------------------------------


@st.composite
def operations(draw):
    kind = draw(st.sampled_from(["steer", "steer_ab", "ablate", "patch", "clamp", "bad"]))
    seed = draw(st.integers(0, 2**16))
    if kind == "steer":
        hooks = draw(st.lists(st.sampled_from(HOOKS), min_size=1, max_size=3, unique=True))
        return (kind, hooks, draw(finite), seed)
    if kind == "steer_ab":
        return (kind, draw(st.sampled_from(HOOKS)), draw(finite), seed)
    hook = draw(st.sampled_from(HOOKS))
    width = WIDTHS[hook]
    if kind == "ablate":
        return (kind, hook, seed)
    if kind == "patch":
        return (kind, hook, draw(st.booleans()), seed)
    if kind == "clamp":
        index = draw(
            st.one_of(
                st.integers(-width, width - 1),
                st.lists(st.integers(0, width - 1), min_size=1, max_size=width, unique=True),
                st.lists(st.booleans(), min_size=width, max_size=width),
            )
        )
        return (kind, hook, index, draw(finite))
    return (
        kind,
        draw(st.sampled_from(["clamp_range", "patch_width", "steer_hook", "ablate_zero", "steer_nan", "steer_shape"])),
        hook,
    )


levels = st.lists(st.tuples(operations(), st.booleans(), st.booleans()), max_size=6)


# -- building contexts and their reference edits ---------------------------------------------


def make(model, seq, op, xa, xb):
    """``(context manager, [(hook, reference fn)], number of hooks it attaches)``."""
    kind = op[0]
    if kind == "steer":
        _, hooks, c, seed = op
        vec = SteeringVector({h: rand(seed + k, WIDTHS[h]) for k, h in enumerate(hooks)})
        edits = [(h, lambda a, v=vec[h]: a + c * v) for h in hooks]
        return model.steer(vec, coeff=c), edits, len(hooks)
    if kind == "steer_ab":
        _, hook, c, _ = op
        acts = _acts_at(seq, torch.stack([xa, xb]), hook)
        v = c * (acts[0] - acts[1])
        return model.steer(a=xa, b=xb, hook=hook, coeff=c), [(hook, lambda a: a + v)], 1
    if kind == "ablate":
        _, hook, seed = op
        d = rand(seed, WIDTHS[hook])
        u = d / d.norm()
        return model.ablate(d, hook), [(hook, lambda a: a - (a @ u).unsqueeze(-1) * u)], 1
    if kind == "patch":
        _, hook, single, seed = op
        new = rand(seed, WIDTHS[hook]) if single else rand(seed, 5, WIDTHS[hook])
        return model.patch(hook, new), [(hook, lambda a: new.expand_as(a).clone())], 1
    if kind == "clamp":
        _, hook, index, value = op

        def fix(a):
            a = a.clone()
            a[:, torch.as_tensor(index if not isinstance(index, int) else [index])] = value
            return a

        return model.clamp(hook, index, value), [(hook, fix)], 1
    raise AssertionError(op)


def _acts_at(seq, x, hook):
    layer, where = hook.split(".")
    i = int(layer.removeprefix("layer"))
    return seq[: i if where == "pre" else i + 1](x)


def enter_bad(model, op):
    """A context with bad arguments: entering it must raise, attaching nothing."""
    _, what, hook = op
    width = WIDTHS[hook]
    ctx = {
        "clamp_range": lambda: model.clamp(hook, width, 1.0),
        "patch_width": lambda: model.patch(hook, torch.zeros(width + 1)),
        "steer_hook": lambda: model.steer(SteeringVector({hook + "x": torch.ones(width)})),
        "ablate_zero": lambda: model.ablate(torch.zeros(width), hook),
        "steer_nan": lambda: model.steer(SteeringVector({hook: torch.ones(width)}), coeff=math.nan),
        "steer_shape": lambda: model.steer(SteeringVector({hook: torch.ones(width + 2)})),
    }[what]
    with pytest.raises((HookedMLPError, IndexError)):
        with ctx():
            pass


class Boom(Exception):
    pass


def run(model, seq, x, xa, xb, todo, active, n_hooks):
    """Enter ``todo[0]``, check everything, recurse; raise / catch Boom as the level says."""
    if not todo:
        return
    (op, raise_here, catch_here), rest = todo[0], todo[1:]
    if op[0] == "bad":
        enter_bad(model, op)
        assert len(model.attached_hooks()) == n_hooks
        check(model, seq, x, active)
        run(model, seq, x, xa, xb, rest, active, n_hooks)
        return
    ctx, edits, added = make(model, seq, op, xa, xb)
    try:
        with ctx:
            assert len(model.attached_hooks()) == n_hooks + added
            now = active + edits
            check(model, seq, x, now)
            if raise_here:
                raise Boom(op)
            run(model, seq, x, xa, xb, rest, now, n_hooks + added)
            assert len(model.attached_hooks()) == n_hooks + added
            check(model, seq, x, now)
    except Boom:
        if not catch_here:
            raise
    assert len(model.attached_hooks()) == n_hooks
    check(model, seq, x, active)


@SETTINGS
@given(todo=levels, user_hook=st.booleans())
def test_nested_interventions_always_restore_the_model(todo, user_hook):
    model, seq = build()
    x, xa, xb = inputs()
    pristine = model(x)
    assert torch.equal(pristine, seq(x))
    active, handles = [], []
    if user_hook:
        handles.append(model.add_hook("layer2.post", lambda a, hook: a * 2.0, is_permanent=True))
        active = [("layer2.post", lambda a: a * 2.0)]
    base = model(x)
    try:
        run(model, seq, x, xa, xb, todo, active, len(handles))
    except Boom:
        pass
    assert model.attached_hooks() == handles
    assert torch.equal(model(x), base)
    for h in handles:
        h.remove()
    assert model.attached_hooks() == []
    assert torch.equal(model(x), pristine)


@functools.cache
def _shared():
    """One model and its vectors for the coefficient property (it never leaves a hook: checked)."""
    model, _ = build()
    x, xa, xb = inputs()
    vectors = {(hook, True): model.steering_vector(xa, xb, hook) for hook in HOOKS}
    vectors.update({(hook, False): SteeringVector({hook: rand(7, WIDTHS[hook])}) for hook in HOOKS})
    return model, x, model(x), vectors


@settings(SETTINGS, max_examples=30)
@given(c1=finite, c2=finite, hook=st.sampled_from(HOOKS), from_inputs=st.booleans(), via_coeff=st.booleans())
def test_nested_coefficients_add(c1, c2, hook, from_inputs, via_coeff):
    model, x, clean, vectors = _shared()
    assert model.attached_hooks() == []
    v = vectors[hook, from_inputs]
    with model.steer((c1 + c2) * v):
        combined = model(x)
    if via_coeff:  # the coefficients given to steer() rather than folded into the vector
        outer, inner = model.steer(v, coeff=c1), model.steer(v, coeff=c2)
    else:
        outer, inner = model.steer(c1 * v), model.steer(c2 * v)
    with outer:
        with inner:
            nested = model(x)
    torch.testing.assert_close(nested, combined, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((c1 * v + c2 * v)[hook], ((c1 + c2) * v)[hook], rtol=1e-5, atol=1e-5)
    assert model.attached_hooks() == []
    assert torch.equal(model(x), clean)
