"""Random sequences of hook operations on a tiny model, checked against a model of what
must be attached (issue 6, "Reliability and safety").

A hypothesis ``RuleBasedStateMachine`` adds and removes hooks (forward / backward,
permanent or not, on names, globs and callable filters), resets them, opens and closes
nested contexts (``hooks()``, ``steer``, ``ablate``, ``patch``, ``clamp``, a
``HookHandle`` used as a context) with explicit ``__enter__`` / ``__exit__`` so that they
nest and unwind in any order, runs ``run_with_cache`` / ``run_with_hooks``, and injects
faults: hook functions that raise (forward and backward), exceptions raised in context
bodies (thrown into one or several open contexts, or raised inside a real ``with``), and
failures during registration (a later entry that is unknown or not callable, a pattern
that matches nothing, a hook point whose ``add_hook`` itself fails half way).

After every step:

* the attached hooks are exactly the machine's model of them: compared by handle
  identity (``model.attached_hooks()``), per HookPoint in attachment order
  (``hp.fwd_hooks`` / ``hp.bwd_hooks``), with ``hp.has_hooks()`` in step;
* when no context is open and no hook is attached, the logits equal the untouched
  model's (a separate plain ``nn.Sequential`` copy, run once at the start) bit for bit
  (``torch.equal``); otherwise, whenever the attached set changed, the model computes
  what that copy computes with the attached edits applied by hand -- bit for bit again
  when none of the attached hooks edits the forward pass (no-op and backward hooks,
  hooks whose contexts were reset away). A forward hook that raises must make the forward
  pass raise, and leave everything as it was.

Runtime: the suite's jaxtyping + typeguard checks cost ~0.3 ms per library call, so a step
costs ~10 ms; 250 examples of 8 steps take ~25 s of CPU on 2 cores (more when the machine is busy).

Below the machine: regression tests for the two bugs it (and bench/bench_memory.py) found.
"""

import copy
import fnmatch
import itertools
import weakref

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from torch import nn

from hookedmlp import HookedMLP, HookGroup, HookHandle, HookNameError, SteeringVector

HOOKS = [f"layer{i}.{p}" for i in range(5) for p in ("pre", "post")]
WIDTHS = {h: 16 if h == "layer0.pre" else 3 if h == "layer4.post" else 8 for h in HOOKS}
GLOBS = ["*.post", "layer1.*", "layer[02].pre", "*", "layer?.pre"]


def ends_in_3_post(name):
    return name.endswith("3.post")


FILTERS = {"<callable:ends_in_3_post>": ends_in_3_post}
TARGETS = HOOKS + GLOBS + list(FILTERS)
MAX_DEPTH = 5


class Boom(Exception):
    """The injected fault."""


def resolve(target):
    """The hook names a target selects, in forward order (the machine's own resolution)."""
    if target in FILTERS:
        return [n for n in HOOKS if FILTERS[target](n)]
    if any(c in target for c in "*?["):
        return fnmatch.filter(HOOKS, target)
    return [target]


def as_target(target):
    return FILTERS.get(target, target)


def rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- hook functions: the library's fn, and the plain edit the reference applies ---------------


def fwd_fn(kind):
    if kind == "noop":
        return (lambda act, hook: None), None
    if kind == "scale":
        return (lambda act, hook: act * 1.5), (lambda a: a * 1.5)
    if kind == "shift":
        return (lambda act, hook: act - 0.25), (lambda a: a - 0.25)

    def boom(act, hook):
        raise Boom(f"forward hook at {hook.name}")

    return boom, "boom"


def bwd_fn(kind):
    if kind == "noop":
        return (lambda grad, hook: None), None
    if kind == "scale":
        return (lambda grad, hook: grad * 2.0), None

    def boom(grad, hook):
        raise Boom(f"backward hook at {hook.name}")

    return boom, "boom"


FWD_KINDS = st.sampled_from(["noop", "scale", "shift", "boom"])
BWD_KINDS = st.sampled_from(["noop", "scale", "boom"])
coeffs = st.floats(min_value=-3, max_value=3, allow_nan=False, allow_infinity=False)
seeds = st.integers(0, 2**16)
fwd_specs = st.lists(st.tuples(st.sampled_from(TARGETS), FWD_KINDS), max_size=3)
bwd_specs = st.lists(st.tuples(st.sampled_from(TARGETS), BWD_KINDS), max_size=2)


class Entry:
    """What the machine believes about one attached hook."""

    __slots__ = ("handle", "name", "dir", "permanent", "edit", "seq", "owner")

    def __init__(self, handle, name, dir, permanent, edit, seq, owner):
        self.handle, self.name, self.dir, self.permanent = handle, name, dir, permanent
        self.edit, self.seq, self.owner = edit, seq, owner  # edit: None (neutral), a fn, or "boom"


class Frame:
    def __init__(self, ctx, kind):
        self.ctx, self.kind, self.entries = ctx, kind, []


def build():
    """The tiny seeded model and a separate plain copy, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        seq = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    reference = copy.deepcopy(seq)  # never wrapped: the untouched model
    return HookedMLP.from_sequential(seq).eval(), reference


X = rand(12345, 5, 16).abs()


class HookMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.model, self.plain = build()
        with torch.no_grad():
            self.clean = self.plain(X)  # the untouched model's logits, once
        self.expected: dict[int, Entry] = {}
        self.frames: list[Frame] = []
        self.handles: list = []  # every handle / group ever returned or created (for remove)
        self.counter = itertools.count()
        self.last_checked = None

    # -- bookkeeping ------------------------------------------------------------------------
    def _track(self, handles, names, dir, permanent, edits, owner):
        assert [h.name for h in handles] == names, (handles, names)
        entries = []
        for h, name, edit in zip(handles, names, edits):
            assert isinstance(h, HookHandle) and h.attached and h.dir == dir and h.is_permanent == permanent
            e = Entry(h, name, dir, permanent, edit, next(self.counter), owner)
            self.expected[id(h)] = e
            entries.append(e)
        return entries

    def _forget(self, handles):
        for h in handles:
            self.expected.pop(id(h), None)

    def _new_since(self, before_ids, ctx):
        """The handles ``ctx`` attached, in attach order; they must be exactly the newly attached ones."""
        handles = list(ctx.handles) if hasattr(ctx, "handles") else (list(ctx) if isinstance(ctx, HookGroup) else [ctx])
        new = {id(h) for h in self.model.attached_hooks() if id(h) not in before_ids}
        assert {id(h) for h in handles} == new
        return handles

    def _fwd_boom(self):
        return any(e.dir == "fwd" and e.edit == "boom" for e in self.expected.values())

    def _bwd_boom(self):
        return any(e.dir == "bwd" and e.edit == "boom" for e in self.expected.values())

    def _logits_patched(self):
        return any(
            f.kind == "patch" and any(e.name == "layer4.post" and id(e.handle) in self.expected for e in f.entries)
            for f in self.frames
        )

    def _snapshot(self):
        return [id(h) for h in self.model.attached_hooks()]

    def _reference(self, x):
        """The plain copy's forward with the attached forward edits applied by hand."""
        edits = sorted(
            (e for e in self.expected.values() if e.dir == "fwd" and e.edit is not None), key=lambda e: e.seq
        )
        h = x
        for i, m in enumerate(self.plain):
            for e in edits:
                if e.name == f"layer{i}.pre":
                    h = e.edit(h)
            h = m(h)
            for e in edits:
                if e.name == f"layer{i}.post":
                    h = e.edit(h)
        return h

    # -- adding and removing hooks -------------------------------------------------------------
    @rule(
        where=st.sampled_from(TARGETS),
        dir=st.sampled_from(["fwd", "bwd"]),
        permanent=st.booleans(),
        kind=st.sampled_from(["noop", "scale", "shift", "boom"]),
    )
    def add_hook(self, where, dir, permanent, kind):
        target = where
        if dir == "bwd" and kind == "shift":
            kind = "scale"
        fn, edit = fwd_fn(kind) if dir == "fwd" else bwd_fn(kind)
        names = resolve(target)
        out = self.model.add_hook(as_target(target), fn, dir=dir, is_permanent=permanent)
        if target in HOOKS:
            assert isinstance(out, HookHandle)
            handles = [out]
        else:
            assert isinstance(out, HookGroup)
            handles = list(out)
        self._track(handles, names, dir, permanent, [edit] * len(names), owner=None)
        self.handles.append(out)

    @rule(
        where=st.sampled_from(["layer9.post", "*.nope", "layer0.pst", "<nothing>"]), dir=st.sampled_from(["fwd", "bwd"])
    )
    def add_hook_unknown(self, where, dir):
        target = where
        before = self._snapshot()
        bad = (lambda n: False) if target == "<nothing>" else target
        with pytest.raises(HookNameError, match="matched no hook point|unknown hook"):
            self.model.add_hook(bad, lambda a, hook: None, dir=dir)
        assert self._snapshot() == before

    @precondition(lambda self: self.handles)
    @rule(i=st.integers(0, 10_000))
    def remove_handle(self, i):
        """``remove()`` on any handle or group ever seen: attached, removed, or a context's."""
        obj = self.handles[i % len(self.handles)]
        obj.remove()
        handles = list(obj) if isinstance(obj, HookGroup) else [obj]
        self._forget(handles)
        assert not any(h.attached for h in handles)

    @rule(including_permanent=st.booleans())
    def reset_hooks(self, including_permanent):
        self.model.reset_hooks(including_permanent=including_permanent)
        self._forget([e.handle for e in list(self.expected.values()) if including_permanent or not e.permanent])

    # -- contexts ----------------------------------------------------------------------------
    def _enter(self, kind, ctx, names, dir, edits, ret_is_model=True):
        before = set(self._snapshot())
        frame = Frame(ctx, kind)
        value = ctx.__enter__()
        self.frames.append(frame)
        if ret_is_model:
            assert value is self.model
        new = self._new_since(before, ctx)
        frame.entries = self._track(new, names, dir, False, edits, owner=frame)
        self.handles.extend(new)
        return frame

    @precondition(lambda self: len(self.frames) < MAX_DEPTH)
    @rule(fwd=fwd_specs, bwd=bwd_specs)
    def enter_hooks(self, fwd, bwd):
        fwd_pairs = [(as_target(t), fwd_fn(k)) for t, k in fwd]
        bwd_pairs = [(as_target(t), bwd_fn(k)) for t, k in bwd]
        ctx = self.model.hooks(
            fwd_hooks=[(t, f) for t, (f, _) in fwd_pairs], bwd_hooks=[(t, f) for t, (f, _) in bwd_pairs]
        )
        before = set(self._snapshot())
        value = ctx.__enter__()
        assert value is self.model
        frame = Frame(ctx, "hooks")
        self.frames.append(frame)
        new = self._new_since(before, ctx)
        fwd_names = [n for t, _ in fwd for n in resolve(t)]
        fwd_edits = [fwd_fn(k)[1] for t, k in fwd for _ in resolve(t)]
        bwd_names = [n for t, _ in bwd for n in resolve(t)]
        bwd_edits = [bwd_fn(k)[1] for t, k in bwd for _ in resolve(t)]
        assert len(new) == len(fwd_names) + len(bwd_names)
        frame.entries = self._track(new[: len(fwd_names)], fwd_names, "fwd", False, fwd_edits, frame)
        frame.entries += self._track(new[len(fwd_names) :], bwd_names, "bwd", False, bwd_edits, frame)
        self.handles.extend(new)

    @precondition(lambda self: len(self.frames) < MAX_DEPTH)
    @rule(hooks=st.lists(st.sampled_from(HOOKS), min_size=1, max_size=3, unique=True), c=coeffs, seed=seeds)
    def enter_steer(self, hooks, c, seed):
        vec = SteeringVector({h: rand(seed + k, WIDTHS[h]) for k, h in enumerate(hooks)})
        edits = [(lambda a, v=c * vec[h]: a + v) for h in hooks]
        # the library registers the vector's hooks in the vector's order
        self._enter("steer", self.model.steer(vec, coeff=c), hooks, "fwd", edits)

    @precondition(lambda self: len(self.frames) < MAX_DEPTH)
    @rule(hook=st.sampled_from(HOOKS), seed=seeds)
    def enter_ablate(self, hook, seed):
        d = rand(seed, WIDTHS[hook])
        u = d / d.norm()
        self._enter("ablate", self.model.ablate(d, hook), [hook], "fwd", [lambda a: a - (a @ u).unsqueeze(-1) * u])

    @precondition(lambda self: len(self.frames) < MAX_DEPTH)
    @rule(hook=st.sampled_from(HOOKS), single=st.booleans(), seed=seeds)
    def enter_patch(self, hook, single, seed):
        new = rand(seed, WIDTHS[hook]) if single else rand(seed, len(X), WIDTHS[hook])
        self._enter("patch", self.model.patch(hook, new), [hook], "fwd", [lambda a: new.expand_as(a).clone()])

    @precondition(lambda self: len(self.frames) < MAX_DEPTH)
    @rule(hook=st.sampled_from(HOOKS), data=st.data(), value=coeffs)
    def enter_clamp(self, hook, data, value):
        index = data.draw(st.integers(0, WIDTHS[hook] - 1), label="index")

        def fix(a):
            a = a.clone()
            a[:, index] = value
            return a

        self._enter("clamp", self.model.clamp(hook, index, value), [hook], "fwd", [fix])

    @precondition(lambda self: len(self.frames) < MAX_DEPTH)
    @rule(where=st.sampled_from(TARGETS), kind=FWD_KINDS)
    def enter_handle_context(self, where, kind):
        target = where
        """``with model.add_hook(...):`` -- the handle (or group) removes its hooks on exit."""
        fn, edit = fwd_fn(kind)
        names = resolve(target)
        before = set(self._snapshot())
        ctx = self.model.add_hook(as_target(target), fn)
        frame = Frame(ctx, "handle")
        assert ctx.__enter__() is ctx
        self.frames.append(frame)
        frame.entries = self._track(self._new_since(before, ctx), names, "fwd", False, [edit] * len(names), frame)
        self.handles.append(ctx)

    @precondition(lambda self: self.frames)
    @rule(levels=st.integers(1, MAX_DEPTH), with_exception=st.booleans())
    def exit_contexts(self, levels, with_exception):
        """Leave the innermost ``levels`` contexts, normally or as an exception raised in
        the innermost body and caught outside them would."""
        exc = Boom("body") if with_exception else None
        for _ in range(min(levels, len(self.frames))):
            frame = self.frames.pop()
            if exc is None:
                frame.ctx.__exit__(None, None, None)
            else:
                suppressed = frame.ctx.__exit__(Boom, exc, exc.__traceback__)
                assert not suppressed  # the exception propagates to the next level
            self._forget([e.handle for e in frame.entries])
            assert not any(e.handle.attached for e in frame.entries)

    @rule(fwd=fwd_specs, c=coeffs, seed=seeds, catch_outside=st.booleans())
    def raise_in_with_body(self, fwd, c, seed, catch_outside):
        """Real ``with`` blocks (hooks() inside steer()); the inner body raises, caught between the
        two blocks or outside both."""
        before = self._snapshot()
        vec = SteeringVector({"layer1.post": rand(seed, 8)})
        n_inner = sum(len(resolve(t)) for t, _ in fwd)
        try:
            with self.model.steer(vec, coeff=c):
                try:
                    with self.model.hooks(fwd_hooks=[(as_target(t), fwd_fn(k)[0]) for t, k in fwd]):
                        assert len(self.model.attached_hooks()) == len(before) + 1 + n_inner
                        raise Boom("body")
                except Boom:
                    if catch_outside:
                        raise
                attached = self._snapshot()
                assert len(attached) == len(before) + 1 and set(before) <= set(attached)
        except Boom:
            assert catch_outside
        assert self._snapshot() == before

    # -- registration faults -----------------------------------------------------------------
    @rule(
        fwd=fwd_specs,
        bwd=bwd_specs,
        bad=st.sampled_from(["unknown", "no-match", "filter-none", "not-callable"]),
        in_bwd=st.booleans(),
        how=st.sampled_from(["hooks", "run_with_hooks"]),
    )
    def bad_entry_in_hook_list(self, fwd, bwd, bad, in_bwd, how):
        """A valid list whose last entry is bad: nothing may be attached, not even the valid ones."""
        before = self._snapshot()
        entry, exc = {
            "unknown": (("layer2.pots", lambda a, hook: None), HookNameError),
            "no-match": (("*.nope", lambda a, hook: None), HookNameError),
            "filter-none": ((lambda n: False, lambda a, hook: None), HookNameError),
            "not-callable": (("layer2.post", 42), TypeError),  # jaxtyping's TypeCheckError is a TypeError too
        }[bad]
        fwd_list = [(as_target(t), fwd_fn(k)[0]) for t, k in fwd]
        bwd_list = [(as_target(t), bwd_fn(k)[0]) for t, k in bwd]
        (bwd_list if in_bwd else fwd_list).append(entry)
        with pytest.raises(exc):
            if how == "hooks":
                with self.model.hooks(fwd_hooks=fwd_list, bwd_hooks=bwd_list):
                    raise AssertionError("entered a hooks() context with a bad entry")
            else:
                self.model.run_with_hooks(X, fwd_hooks=fwd_list, bwd_hooks=bwd_list)
        assert self._snapshot() == before

    @rule(
        fail_at=st.sampled_from(HOOKS),
        fwd=st.lists(st.sampled_from(TARGETS), min_size=1, max_size=3),
        dir=st.sampled_from(["fwd", "bwd"]),
        via=st.sampled_from(["hooks", "add_hook", "steer"]),
    )
    def registration_fails_half_way(self, fail_at, fwd, dir, via):
        """``HookPoint.add_hook`` at ``fail_at`` raises: whatever the call registered before
        that point must be rolled back."""
        hp = self.model.hook_dict[fail_at]
        targets = fwd + [fail_at]
        before = self._snapshot()

        def failing_add_hook(*args, **kwargs):
            raise Boom(f"registration at {fail_at}")

        hp.add_hook = failing_add_hook  # an instance attribute shadows the method
        try:
            with pytest.raises(Boom, match="registration"):
                if via == "hooks":
                    specs = [(as_target(t), lambda a, hook: None) for t in targets]
                    kw = {"fwd_hooks": specs} if dir == "fwd" else {"fwd_hooks": specs[:-1], "bwd_hooks": specs[-1:]}
                    with self.model.hooks(**kw):
                        raise AssertionError("entered")
                elif via == "add_hook":
                    self.model.add_hook(
                        lambda n, ts=tuple(resolve(t) for t in targets): any(n in r for r in ts),  # noqa: B008 (bound now, on purpose)
                        lambda a, hook: None,
                        dir=dir,
                    )
                else:
                    vec = SteeringVector({h: torch.ones(WIDTHS[h]) for t in targets for h in resolve(t)})
                    with self.model.steer(vec):
                        raise AssertionError("entered")
        finally:
            del hp.add_hook
        assert self._snapshot() == before

    @rule(hook=st.sampled_from(["layer0.pst", "layer7.post", "layer1.post "]), width_off=st.integers(0, 2))
    def bad_steering_vector(self, hook, width_off):
        before = self._snapshot()
        vec = SteeringVector({"layer1.post": torch.ones(8), hook: torch.ones(8 + width_off)})
        with pytest.raises(HookNameError, match="which this model lacks"):
            with self.model.steer(vec):
                raise AssertionError("entered")
        assert self._snapshot() == before

    # -- running -------------------------------------------------------------------------------
    @rule(where=st.sampled_from([None] + TARGETS), incl_bwd=st.booleans())
    def run_with_cache(self, where, incl_bwd):
        target = where
        before = self._snapshot()
        names = HOOKS if target is None else resolve(target)
        try:
            out, cache = self.model.run_with_cache(
                X, names_filter=None if target is None else as_target(target), incl_bwd=incl_bwd
            )
        except Boom as e:
            assert self._fwd_boom() or (incl_bwd and self._bwd_boom()), e
        else:
            assert not self._fwd_boom()
            acts = [k for k in cache if not k.endswith("_grad")]
            assert acts == names
            assert set(cache) - set(acts) <= {n + "_grad" for n in names}
            if incl_bwd:
                assert not out.requires_grad
            self._check_output(out)
        assert self._snapshot() == before

    @rule(fwd=fwd_specs, bwd=bwd_specs, backward=st.booleans())
    def run_with_hooks(self, fwd, bwd, backward):
        before = self._snapshot()
        temp_boom = any(k == "boom" for _, k in fwd)
        try:
            with torch.enable_grad():
                out = self.model.run_with_hooks(
                    X,
                    fwd_hooks=[(as_target(t), fwd_fn(k)[0]) for t, k in fwd],
                    bwd_hooks=[(as_target(t), bwd_fn(k)[0]) for t, k in bwd],
                )
        except Boom:
            assert temp_boom or self._fwd_boom()
        else:
            assert not (temp_boom or self._fwd_boom())
            if backward and out.requires_grad:
                # The temporary backward hooks are gone: only attached ones may still fire.
                params = [p for p in self.model.parameters() if p.requires_grad]
                try:
                    torch.autograd.grad(out.sum(), params, allow_unused=True)
                except Boom:
                    assert self._bwd_boom()
        assert self._snapshot() == before

    # -- invariants ----------------------------------------------------------------------------
    @invariant()
    def attached_hooks_are_exactly_the_expected_ones(self):
        # (Plain attributes only, except one attached_hooks() call: under the test suite's
        # runtime type checks every library call and property costs ~0.3 ms.)
        attached = self.model.attached_hooks()
        ids = [id(h) for h in attached]
        assert len(ids) == len(set(ids)), "a handle is attached twice"
        assert set(ids) == set(self.expected), (attached, [e.handle for e in self.expected.values()])
        by_point = {}
        for e in sorted(self.expected.values(), key=lambda e: e.seq):
            by_point.setdefault((e.name, e.dir), []).append(id(e.handle))
        for name, hp in self.model.hook_dict.items():
            for dir, hooks in (("fwd", hp.fwd_hooks), ("bwd", hp.bwd_hooks)):
                assert [id(h) for h in hooks] == by_point.get((name, dir), []), (name, dir, hooks)
                assert all(h._point is hp and h.dir == dir for h in hooks)
            assert hp.has_hooks() == bool(hp.fwd_hooks or hp.bwd_hooks), f"has_hooks() out of step at {name}"
        for obj in self.handles:
            for h in obj if isinstance(obj, HookGroup) else [obj]:
                if id(h) not in self.expected:
                    assert h._point is None, f"{h!r} is detached from the model but still thinks it is attached"

    def _check_output(self, out):
        with torch.no_grad():
            ref = self._reference(X)
        if not any(e.dir == "fwd" and e.edit is not None for e in self.expected.values()):
            assert torch.equal(out.detach(), self.clean), "no hook edits the forward pass, yet the logits changed"
        else:
            torch.testing.assert_close(out.detach(), ref, rtol=1e-4, atol=1e-4)

    @invariant()
    def outputs_match_the_reference(self):
        """With no context open and no hook attached: the untouched logits, bit for bit.
        Otherwise (checked whenever the attached set changed; a forward pass with hooks
        costs ~5 ms under the suite's runtime type checks): the hand-applied reference."""
        if not self.frames and not self.expected:
            assert torch.equal(self.model(X), self.clean), (
                "no context open and no hook attached, yet the logits changed"
            )
            self.last_checked = ()
            return
        state = tuple(sorted(self.expected))
        if state == self.last_checked:
            return
        self.last_checked = state
        if self._fwd_boom():
            with pytest.raises(Boom):
                self.model(X)
        else:
            self._check_output(self.model(X))

    def teardown(self):
        while self.frames:
            self.frames.pop().ctx.__exit__(None, None, None)
        self.model.reset_hooks(including_permanent=True)
        assert self.model.attached_hooks() == []
        assert not any(hp.has_hooks() for hp in self.model.hook_dict.values())
        with torch.no_grad():
            assert torch.equal(self.model(X), self.clean)


HookMachine.TestCase.settings = settings(
    max_examples=150,  # about 24 s on 2 cores: the suite stays under 5 minutes
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestHookMachine = HookMachine.TestCase


def test_run_with_cache_incl_bwd_when_the_logits_are_patched(tiny, tiny_x):
    """Found by the state machine: ``enter_patch('layer4.post')``, then ``run_with_cache(incl_bwd=True)`` of a
    point before it. (Caching ``layer4.post`` itself works: the cache's own hook makes it a leaf.)"""
    try:
        with tiny.patch("layer4.post", torch.zeros(3)):
            out, cache = tiny.run_with_cache(tiny_x, names_filter="layer0.post", incl_bwd=True)
    finally:
        assert tiny.attached_hooks() == []  # the failure itself leaves nothing attached
    assert torch.equal(out, torch.zeros(5, 3))
    assert list(cache) == ["layer0.post"]  # the activation is cached; no gradient reaches it


@pytest.mark.parametrize(
    "names",
    [
        None,  # a plain forward pass: the reference
        "layer0.post",
        "layer1.post",
    ],
)
def test_run_with_cache_does_not_keep_the_uncopied_activation_alive(tiny, tiny_x, names):
    """The activation at layer0.post must be freed once the next module has read it, cached or not."""
    seen, alive = {}, []
    first = tiny.add_hook("layer0.post", lambda act, hook: seen.__setitem__("act", weakref.ref(act)))
    later = tiny.add_hook("layer3.post", lambda act, hook: alive.append(seen["act"]() is not None))
    try:
        with torch.no_grad():
            if names is None:
                tiny(tiny_x)
            else:
                tiny.run_with_cache(tiny_x, names_filter=names)
    finally:
        first.remove()
        later.remove()
    assert alive == [False], "layer0.post's activation (not the cache's copy) is still alive at layer3.post"
