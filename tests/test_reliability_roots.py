"""The hook state machine on ``HookedRoot`` subclasses, through the public API only (issue 21): the shipped
``ResidualMLP`` and a TransformerLens-style subclass written here, with a skip connection, HookPoints in
``forward`` and ``setup()``.

Rules add and remove hooks (permanent or not, editing or not, raising), reset them, open and close
``hooks()`` and ``steer()`` contexts in any order (closing some with an exception), and run
``run_with_cache``. After every step the attached hooks are exactly the machine's model of them, and the
logits equal a reference: a deep copy of the clean model made at the start, with the attached edits
applied through PyTorch's own forward hooks on its HookPoint modules (never through hookedmlp's). A hook
that raises makes the forward pass raise and changes nothing. Small and fast: 20 examples of 8 steps each.
"""

import copy
import itertools

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from torch import nn

from hookedmlp import HookedRoot, HookPoint, ResidualConfig, ResidualMLP, SteeringVector, steer
from hookedmlp.models.facts import activation_shapes

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: several threads only spin on a busy machine


class TinyTL(HookedRoot):
    """A network that is not a chain, written the TransformerLens way."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = (6,)
        self.inp, self.mid, self.out = nn.Linear(6, 5), nn.Linear(5, 5), nn.Linear(5, 3)
        self.hook_in = HookPoint()
        self.hook_mid = HookPoint()
        self.hook_resid = HookPoint()
        self.setup()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.hook_in(torch.relu(self.inp(x)))
        b = self.hook_resid(a + self.hook_mid(torch.tanh(self.mid(a))))
        return self.out(b)


class Boom(Exception):
    """The injected fault."""


def _fn(kind, seed):
    """``(hook function, the edit it makes as a function of the activation, or None)``."""
    if kind == "noop":
        return (lambda act, hook: None), None
    if kind == "boom":

        def boom(act, hook):
            raise Boom(hook.name)

        return boom, "boom"
    shift = 0.5 + seed % 7
    return (lambda act, hook: act + shift), (lambda act: act + shift)


class RootMachine(RuleBasedStateMachine):
    """Subclasses set ``build``: a fresh seeded model of the kind under test."""

    build = staticmethod(lambda: None)

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.model = self.build().eval()
        self.plain = copy.deepcopy(self.model)  # never hooked through hookedmlp: the reference
        self.names = self.model.hook_names
        self.shapes = activation_shapes(self.model)  # the function: a plain HookedRoot has no such method
        self.x = torch.randn(4, *self.model.input_shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            self.clean = self.plain(self.x)
        self.expected: dict[int, tuple] = {}  # id(handle) -> (handle, name, edit, order, permanent)
        self.frames: list[tuple] = []  # (context, its handles)
        self.order = itertools.count()

    def _track(self, handles, names, edits, permanent):
        for h, name, edit in zip(handles, names, edits):
            assert h.attached and h.name == name
            self.expected[id(h)] = (h, name, edit, next(self.order), permanent)

    def _reference(self):
        """The clean copy's logits with the expected edits applied by PyTorch forward hooks, in attach order."""
        entries = sorted(self.expected.values(), key=lambda e: e[3])
        modules = dict(self.plain.named_modules())
        handles = [
            modules[name].register_forward_hook(lambda m, args, out, edit=edit: edit(out))
            for _, name, edit, _, _ in entries
            if edit is not None
        ]
        try:
            with torch.no_grad():
                return self.plain(self.x)
        finally:
            for h in handles:
                h.remove()

    @rule(name=st.data(), kind=st.sampled_from(["noop", "shift", "boom"]), seed=st.integers(0, 99), perm=st.booleans())
    def add_hook(self, name, kind, seed, perm):
        hook = name.draw(st.sampled_from(self.names))
        fn, edit = _fn(kind, seed)
        self._track([self.model.add_hook(hook, fn, is_permanent=perm)], [hook], [edit], perm)

    @precondition(lambda self: self.expected)
    @rule(i=st.integers(0, 1000))
    def remove_one(self, i):
        handle = sorted(self.expected.values(), key=lambda e: e[3])[i % len(self.expected)][0]
        handle.remove()
        del self.expected[id(handle)]
        assert not handle.attached

    @rule(including_permanent=st.booleans())
    def reset_hooks(self, including_permanent):
        self.model.reset_hooks(including_permanent=including_permanent)
        for key, entry in list(self.expected.items()):
            if including_permanent or not entry[4]:
                del self.expected[key]

    @precondition(lambda self: len(self.frames) < 4)
    @rule(specs=st.data())
    def enter_hooks(self, specs):
        pairs = specs.draw(
            st.lists(
                st.tuples(st.sampled_from(self.names), st.sampled_from(["noop", "shift", "boom"]), st.integers(0, 9)),
                min_size=1,
                max_size=3,
            )
        )
        fns = [_fn(kind, seed) for _, kind, seed in pairs]
        ctx = self.model.hooks(fwd_hooks=[(name, fn) for (name, _, _), (fn, _) in zip(pairs, fns)])
        before = {id(h) for h in self.model.attached_hooks()}
        assert ctx.__enter__() is self.model
        new = [h for h in self.model.attached_hooks() if id(h) not in before]
        new.sort(key=lambda h: [id(x) for x in ctx.handles].index(id(h)))
        self._track(new, [n for n, _, _ in pairs], [edit for _, edit in fns], False)
        self.frames.append((ctx, new))

    @precondition(lambda self: len(self.frames) < 4)
    @rule(specs=st.data(), c=st.floats(-3, 3, allow_nan=False), seed=st.integers(0, 99))
    def enter_steer(self, specs, c, seed):
        hooks = specs.draw(st.lists(st.sampled_from(self.names), min_size=1, max_size=2, unique=True))
        g = torch.Generator().manual_seed(seed)
        vec = SteeringVector({h: torch.randn(self.shapes[h], generator=g) for h in hooks})
        ctx = steer(self.model, vec, coeff=c)
        before = {id(h) for h in self.model.attached_hooks()}
        ctx.__enter__()
        new = [h for h in self.model.attached_hooks() if id(h) not in before]
        names = [h.name for h in new]
        assert sorted(names) == sorted(hooks)
        self._track(new, names, [(lambda a, v=c * vec[n]: a + v) for n in names], False)
        self.frames.append((ctx, new))

    @precondition(lambda self: self.frames)
    @rule(with_exception=st.booleans())
    def exit_context(self, with_exception):
        ctx, handles = self.frames.pop()
        if with_exception:
            try:
                raise Boom("in the body")
            except Boom as e:
                assert not ctx.__exit__(Boom, e, e.__traceback__)
        else:
            ctx.__exit__(None, None, None)
        for h in handles:
            self.expected.pop(id(h), None)
            assert not h.attached

    @rule(filtered=st.booleans())
    def run_with_cache(self, filtered):
        names = self.names[:2] if filtered else None
        if any(e[2] == "boom" for e in self.expected.values()):
            with pytest.raises(Boom):
                self.model.run_with_cache(self.x, names_filter=names)
            return
        logits, cache = self.model.run_with_cache(self.x, names_filter=names)
        assert sorted(cache.keys()) == sorted(names or self.names)
        assert torch.equal(logits, self._reference())

    @invariant()
    def attached_hooks_are_the_expected_ones(self):
        assert {id(h) for h in self.model.attached_hooks()} == set(self.expected)

    @invariant()
    def logits_match_the_reference(self):
        if any(e[2] == "boom" for e in self.expected.values()):
            with pytest.raises(Boom), torch.no_grad():
                self.model(self.x)
            return
        with torch.no_grad():
            out = self.model(self.x)
        assert torch.equal(out, self._reference())
        if not any(e[2] is not None for e in self.expected.values()):
            assert torch.equal(out, self.clean)

    def teardown(self):
        while self.frames:
            self.frames.pop()[0].__exit__(None, None, None)
        self.model.reset_hooks(including_permanent=True)
        assert self.model.attached_hooks() == []
        with torch.no_grad():
            assert torch.equal(self.model(self.x), self.clean)


class ResidualMachine(RootMachine):
    build = staticmethod(lambda: ResidualMLP(ResidualConfig(d_in=6, d_model=4, d_mlp=5, n_blocks=2, d_out=3)))


class TinyTLMachine(RootMachine):
    build = staticmethod(TinyTL)


_SETTINGS = settings(
    max_examples=20,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
ResidualMachine.TestCase.settings = _SETTINGS
TinyTLMachine.TestCase.settings = _SETTINGS
TestResidualMachine = ResidualMachine.TestCase
TestTinyTLMachine = TinyTLMachine.TestCase
