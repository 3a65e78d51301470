"""Hook points used wrongly in a network written by hand (issue 21, item 7), on a plain ``HookedRoot``
subclass and on a ``HookedModel`` subclass: a hook point forward never calls, one called twice in a
pass, one given a tuple, and a forgotten ``setup()``. Each is said where it happens, naming the hook
point and the fix; results are compared with plain torch.
"""

import re
import warnings

import pytest
import torch
from torch import nn

import hookedmlp
from hookedmlp import HookedMLP, HookedModel, HookedRoot, HookNameError, HookPoint, SteeringVector
from hookedmlp.hooks.point import HookWarning
from hookedmlp.models import facts

BASES = [HookedRoot, HookedModel]


def make(base, twice=False):
    """A seeded network with ``hook_a`` (called), ``hook_unused`` (never called) and, with ``twice``,
    ``hook_twice`` called two times in each pass."""

    class Net(base):
        def __init__(self):
            super().__init__()
            self.input_shape = (4,)
            self.lin, self.out = nn.Linear(4, 4), nn.Linear(4, 3)
            self.hook_a = HookPoint()
            self.hook_unused = HookPoint()
            self.hook_twice = HookPoint()
            self.setup()

        def forward(self, x):
            h = self.hook_a(torch.relu(self.lin(x)))
            if twice:
                h = self.hook_twice(self.hook_twice(h) * 2)
            return self.out(h)

    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture
def x():
    return torch.rand(5, 4, generator=torch.Generator().manual_seed(1))


NEVER_RAN = (
    "hook point 'hook_unused' of Net did not run in the forward pass: forward never calls self.hook_unused on this "
    "input, or returns before it (e.g. stop_at_layer); call it in forward"
)


# -- a hook point forward never calls --------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
def test_run_with_cache_says_a_named_hook_point_never_ran(base, x):
    model = make(base)
    with pytest.raises(HookNameError, match=re.escape(NEVER_RAN) + "$"):
        model.run_with_cache(x, names_filter="hook_unused")
    with pytest.raises(HookNameError, match=re.escape(NEVER_RAN + ", or pick a hook point that ran: hook_a")):
        model.run_with_cache(x, names_filter=["hook_a", "hook_unused"])
    with pytest.raises(HookNameError, match=re.escape(NEVER_RAN)):  # a filter none of whose points ran
        model.run_with_cache(x, names_filter=lambda name: name.endswith("unused"))
    assert model.attached_hooks() == []
    # a pattern, or all points, may select some that do not run: the cache then says so when asked
    for names_filter in ("hook_*", None):
        _, cache = model.run_with_cache(x, names_filter=names_filter)
        assert list(cache) == ["hook_a"]
        assert torch.equal(cache["hook_a"], torch.relu(model.lin(x)))
        with pytest.raises(
            HookNameError,
            match=re.escape(
                "no activation cached for 'hook_unused': it is a hook point of Net, but it did not run in the "
                "recorded pass (forward never calls it, or returned before it) or names_filter left it out; "
                "cached: ['hook_a']"
            ),
        ):
            cache["hook_unused"]


def test_run_with_cache_says_a_hook_point_after_stop_at_layer_never_ran(tiny, tiny_x):
    with pytest.raises(HookNameError, match=re.escape("hook point 'layer3.post' of HookedMLP did not run")):
        tiny.run_with_cache(tiny_x, names_filter=["layer0.post", "layer3.post"], stop_at_layer=2)
    _, cache = tiny.run_with_cache(tiny_x, names_filter="*.post", stop_at_layer=2)  # some of the pattern ran
    assert list(cache) == ["layer0.post", "layer1.post"]


@pytest.mark.parametrize("base", BASES)
def test_steering_at_a_hook_point_never_called_says_so(base, x):
    model = make(base)
    xa, xb = x[:2], x[2:]
    for build in (  # a pass recording the hook point alone
        lambda: hookedmlp.steering_vector(model, xa, xb, "hook_unused"),
        lambda: hookedmlp.steer(model, a=xa, b=xb, hook="hook_unused"),
    ):
        with pytest.raises(HookNameError, match=re.escape(NEVER_RAN) + "$"):
            build()
    for check in (  # the probe pass of every hook point: the message lists those that ran
        lambda: SteeringVector({"hook_unused": torch.ones(4)}).apply(model),
        lambda: facts.activation_shape(model, "hook_unused"),
    ):
        with pytest.raises(HookNameError, match=re.escape(NEVER_RAN + ", or pick a hook point that ran: hook_a")):
            check()
    if base is HookedModel:
        with pytest.raises(HookNameError, match=re.escape(NEVER_RAN)):
            model.steering_vector(xa, xb, "hook_unused")
        with pytest.raises(HookNameError, match=re.escape(NEVER_RAN)):
            model.activation_shape("hook_unused")
    assert facts.activation_shapes(model) == {"hook_a": (4,)}  # the points that run
    assert model.attached_hooks() == []


# -- a hook point called twice in one pass -----------------------------------------------------------------

TWICE = (
    "hook point 'hook_twice' ran twice in one forward pass: its hooks run at each call, so a steering vector or "
    "intervention is applied twice and a cache keeps only the last activation; give each call its own HookPoint"
)


@pytest.mark.parametrize("base", BASES)
def test_a_hook_point_called_twice_warns_and_its_hooks_run_at_each_call(base, x):
    model = make(base, twice=True)
    h = torch.relu(model.lin(x))
    with pytest.warns(HookWarning, match=re.escape(TWICE)) as caught:
        _, cache = model.run_with_cache(x, names_filter="hook_twice")
    assert len(caught) == 1  # once per pass
    assert caught[0].filename == __file__  # at the line of forward that calls it again
    assert torch.equal(cache["hook_twice"], h * 2)  # the last call's activation
    v = torch.tensor([1.0, -1.0, 0.5, 0.0])
    with pytest.warns(HookWarning, match=re.escape(TWICE)):
        with SteeringVector({"hook_twice": v}).apply(model), torch.no_grad():
            steered = model(x)
    assert torch.allclose(steered, model.out((h + v) * 2 + v))  # added at both calls
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            assert torch.equal(model(x), model.out(h * 2))  # no hook attached: nothing to say


@pytest.mark.parametrize("base", BASES)
def test_no_warning_for_one_call_per_pass_or_calls_outside_a_model(base, x):
    model = make(base)
    point = HookPoint()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with model.hooks(fwd_hooks=[("hook_a", lambda act, hook: act + 1)]):
            model(x), model(x)  # two passes, one call each
            model.run_with_cache(x)
        with point.add_hook(lambda act, hook: act + 1):
            point(x), point(x)  # a bare hook point belongs to no pass


# -- a hook point given a tuple ---------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
def test_a_hook_point_given_a_tuple_names_itself_when_hooked(base, x):
    class Pair(base):
        def __init__(self):
            super().__init__()
            self.input_shape = (4,)
            self.hook_pair = HookPoint()
            self.setup()

        def forward(self, x):
            a, b = self.hook_pair((x, x + 1))
            return a * b

    model = Pair()
    assert torch.equal(model(x), x * (x + 1))  # without hooks a HookPoint is the identity, as in TransformerLens
    message = re.escape(
        "hook point 'hook_pair' was called with a tuple of 2, but hooks and caches need one tensor per hook point; "
        "call a HookPoint on each tensor in forward (e.g. a = self.hook_a(a) and b = self.hook_b(b))"
    )
    with pytest.raises(TypeError, match=message):
        model.run_with_cache(x)
    with pytest.raises(TypeError, match=message):
        model.run_with_hooks(x, fwd_hooks=[("hook_pair", lambda act, hook: None)])
    with pytest.raises(TypeError, match=message):
        facts.activation_shapes(model)
    assert model.attached_hooks() == []


# -- a forgotten setup() ------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
def test_a_forgotten_setup_says_to_call_it(base, x):
    class NoSetup(base):
        def __init__(self):
            super().__init__()
            self.input_shape = (4,)
            self.lin = nn.Linear(4, 4)
            self.hook_a = HookPoint()

        def forward(self, x):
            return self.hook_a(self.lin(x))

    model = NoSetup()
    message = re.escape(
        "NoSetup has HookPoints that setup() has not named (['hook_a']): setup() was never called; call "
        "self.setup() at the end of NoSetup.__init__, after making every HookPoint"
    )
    for use in (
        lambda: model.add_hook("hook_a", lambda act, hook: None),
        lambda: model.run_with_cache(x),
        lambda: model.run_with_cache(x, names_filter="hook_a"),
        lambda: model.run_with_hooks(x, fwd_hooks=[("hook_a", lambda act, hook: None)]),
        lambda: model.list_hooks("hook_a"),
        lambda: hookedmlp.steering_vector(model, x[:2], x[2:], "hook_a"),
    ):
        with pytest.raises(HookNameError, match=message):
            use()
    model.setup()
    model.hook_b = HookPoint()  # made after setup()
    with pytest.raises(HookNameError, match=re.escape("(['hook_b']): setup() ran before they were made")):
        model.add_hook("hook_b", lambda act, hook: None)
    assert model.attached_hooks() == []


def test_unknown_names_on_set_up_models_still_get_the_closest_names(tiny):
    captured = hookedmlp.capture(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), input_shape=(4,))
    for model in (tiny, captured, make(HookedRoot), HookedMLP.from_sequential(nn.Sequential(nn.Linear(2, 2)))):
        name = model.hook_names[0]
        with pytest.raises(HookNameError, match=re.escape(f"unknown hook '{name}x'; did you mean '{name}'?")):
            model.add_hook(f"{name}x", lambda act, hook: None)
