"""TransformerLens 4.3.0 parity for hooks: the behaviours its generic hook, HookedRootModule and
run_with_hooks tests pin down, checked on our layout (``layer{i}.pre`` / ``layer{i}.post``)
against plain torch; each deliberate difference is asserted as such (``DIFFERENCE:``).

Caching is in tests/test_tl_parity_cache.py; docs/transformerlens.md has the table of names.
"""

import re
import warnings

import pytest
import torch

from hookedmlp import ActivationCache, HookHandle, HookNameError, HookPoint, ShapeError, UsageError


def identity(act, hook):
    return act


class Count:
    """A hook counting its calls; TransformerLens' tests call ``inc(*args, **kwargs)``."""

    def __init__(self):
        self.n = 0

    def __call__(self, *args, **kwargs):
        self.n += 1


def chain(seq, x, upto=None):
    for m in list(seq)[:upto]:
        x = m(x)
    return x


# -- HookPoint -------------------------------------------------------------------------------


def test_add_hook_fills_the_direction_lists_with_permanence_and_level():
    hp = HookPoint()
    a = hp.add_hook(identity)
    b = hp.add_hook(identity, dir="bwd", is_permanent=True)
    c = hp.add_hook(identity, level=5)
    try:
        assert hp.fwd_hooks == [a, c] and hp.bwd_hooks == [b]
        assert b.is_permanent and not a.is_permanent
        assert c.context_level == 5 and a.context_level is None
    finally:
        hp.remove_hooks("both", including_permanent=True)


def test_prepend_puts_the_hook_first_and_runs_it_first():
    hp = HookPoint()
    first = hp.add_hook(lambda act, hook: act + 1)
    second = hp.add_hook(lambda act, hook: act * 3, prepend=True)
    try:
        assert hp.fwd_hooks == [second, first]
        assert torch.equal(hp(torch.tensor([1.0])), torch.tensor([4.0]))  # (1 * 3) + 1
    finally:
        first.remove(), second.remove()


@pytest.mark.parametrize(
    "dir,including_permanent,level,expected",
    [
        ("both", True, None, True),
        ("fwd", True, 0, True),
        ("fwd", False, 0, False),  # the level-0 forward hook is permanent
        ("fwd", False, 1, True),
        ("bwd", False, 0, True),
        ("bwd", False, 1, False),
        ("bwd", True, 2, True),
        ("bwd", False, 2, False),
        ("both", True, 3, False),
        ("both", True, -1, False),
    ],
)
def test_has_hooks_filters_like_transformerlens(dir, including_permanent, level, expected):
    hp = HookPoint()
    hp.add_hook(identity, dir="fwd", level=0, is_permanent=True)
    hp.add_hook(identity, dir="fwd", level=1)
    hp.add_hook(identity, dir="bwd", level=0)
    hp.add_hook(identity, dir="bwd", level=2, is_permanent=True)
    try:
        assert hp.has_hooks(dir, including_permanent, level) is expected
        assert hp.has_hooks(dir=dir, including_permanent=including_permanent, level=level) is expected
    finally:
        hp.remove_hooks("both", including_permanent=True)
    assert not hp.has_hooks() and not hp.has_hooks("fwd") and not hp.has_hooks("bwd")


def test_has_hooks_defaults_and_an_unknown_direction():
    hp = HookPoint()
    with hp.add_hook(identity, is_permanent=True, level=5):
        assert hp.has_hooks() and hp.has_hooks("both", True, None)  # the defaults
        assert not hp.has_hooks(including_permanent=False)
        assert not hp.has_hooks(level=0)
        with pytest.raises(ValueError, match=re.escape("dir must be one of 'fwd', 'bwd', 'both', got 'invalid'")):
            hp.has_hooks(dir="invalid")


def test_hook_is_called_with_hook_as_a_keyword():
    got = []

    def keyword_only(act, *, hook):
        got.append(hook)

    hp = HookPoint()
    with hp.add_hook(keyword_only):
        x = torch.ones(2)
        assert hp(x) is x  # returning None keeps the activation
    assert got == [hp]


def test_default_name_repr_and_layer(tiny):
    assert HookPoint().name is None and repr(HookPoint()) == "HookPoint()"
    hp = tiny.hook_dict["layer3.post"]
    assert hp.name == "layer3.post" and hp.layer() == 3
    with hp.add_hook(identity), hp.add_hook(identity, dir="bwd"), hp.add_hook(identity, dir="bwd"):
        assert repr(hp) == "HookPoint(name='layer3.post', 1 fwd, 2 bwd)"
    # DIFFERENCE: TransformerLens' layer() reads name.split(".")[1]; ours also understands layer{i}.*
    with pytest.raises(UsageError, match="has no layer index"):
        HookPoint().layer()


# -- HookedRoot: hooks, contexts, permanence (TransformerLens' tests/integration/test_hooks.py) --------


def test_run_with_hooks_with_a_filter_runs_once_and_leaves_nothing(tiny, tiny_x):
    c = Count()
    tiny.run_with_hooks(tiny_x, fwd_hooks=[(lambda name: name == "layer0.pre", c)])
    assert c.n == 1
    assert all(not hp.fwd_hooks for hp in tiny.hook_points())


def test_perma_hook_survives_run_with_hooks_and_remove_all_hook_fns(tiny, tiny_x):
    c = Count()
    tiny.add_perma_hook("layer0.pre", c)
    assert len(tiny.hook_dict["layer0.pre"].fwd_hooks) == 1
    tiny.run_with_hooks(tiny_x, fwd_hooks=[])
    assert c.n == 1 and len(tiny.hook_dict["layer0.pre"].fwd_hooks) == 1
    tiny.remove_all_hook_fns()
    assert len(tiny.hook_dict["layer0.pre"].fwd_hooks) == 1  # permanent: kept without the flag
    tiny.remove_all_hook_fns(including_permanent=True)
    assert len(tiny.hook_dict["layer0.pre"].fwd_hooks) == 0
    tiny.run_with_hooks(tiny_x, fwd_hooks=[])
    assert c.n == 1


def test_nested_contexts_count_and_unwind(tiny, tiny_x):
    c = Count()
    hp = tiny.hook_dict["layer0.pre"]
    with tiny.hooks(fwd_hooks=[("layer0.pre", c)]):
        assert len(hp.fwd_hooks) == 1 and hp.fwd_hooks[0].context_level == 1
        tiny(tiny_x)
        with tiny.hooks(fwd_hooks=[("layer0.pre", c)]):
            assert len(hp.fwd_hooks) == 2 and hp.fwd_hooks[1].context_level == 2
            tiny(tiny_x)
            assert c.n == 3
        assert len(hp.fwd_hooks) == 1
    assert len(hp.fwd_hooks) == 0 and c.n == 3 and tiny.context_level == 0


def test_context_with_a_permanent_hook_and_run_with_cache_inside(tiny, tiny_x):
    c = Count()
    tiny.add_perma_hook("layer0.pre", c)
    with tiny.hooks(fwd_hooks=[("layer0.pre", c)]):
        assert len(tiny.hook_dict["layer0.pre"].fwd_hooks) == 2
        tiny.run_with_cache(tiny_x)
        assert len(tiny.hook_dict["layer0.pre"].fwd_hooks) == 2
    assert len(tiny.hook_dict["layer0.pre"].fwd_hooks) == 1 and c.n == 2
    tiny.reset_hooks(including_permanent=True)


def test_failure_in_an_inner_context_keeps_the_outer(tiny, tiny_x):
    def fail(act, hook):
        raise ValueError("fail")

    c = Count()
    with tiny.hooks(fwd_hooks=[("layer0.pre", c)]):
        with pytest.raises(ValueError, match="^fail$"):
            with tiny.hooks(fwd_hooks=[("layer0.pre", fail)]):
                assert len(tiny.hook_dict["layer0.pre"].fwd_hooks) == 2
                tiny(tiny_x)
        assert len(tiny.hook_dict["layer0.pre"].fwd_hooks) == 1 and c.n == 1
    assert tiny.attached_hooks() == []


def test_reset_hooks_inside_a_context(tiny):
    with tiny.hooks(fwd_hooks=[("layer0.pre", identity)]):
        tiny.reset_hooks()
        assert tiny.hook_dict["layer0.pre"].fwd_hooks == []
    assert tiny.attached_hooks() == []


@pytest.mark.parametrize("returns", ["tuple", "tensor", "none"])
def test_backward_hook_in_a_context_runs_on_backward(tiny, tiny_x, returns):
    c = Count()

    def grad_hook(grad, hook):
        c()
        return {"tuple": (grad,), "tensor": grad, "none": None}[returns]

    with tiny.hooks(bwd_hooks=[("layer2.post", grad_hook)]):
        out = tiny(tiny_x)
        assert c.n == 0
        out.sum().backward()
        assert len(tiny.hook_dict["layer2.post"].bwd_hooks) == 1
    assert tiny.hook_dict["layer2.post"].bwd_hooks == [] and c.n == 1


def test_backward_hook_returning_a_tuple_replaces_the_gradient(tiny, tiny_seq, tiny_x):
    leaf = tiny_x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(tiny_seq(leaf).sum(), [leaf])
    with tiny.hooks(bwd_hooks=[("layer2.post", lambda grad, hook: (grad * 2,))]):
        x = tiny_x.clone().requires_grad_(True)
        tiny(x).sum().backward()
    assert torch.allclose(x.grad, 2 * ref, atol=1e-6)


@pytest.mark.parametrize("zero_first,prepend", [(z, p) for z in (True, False) for p in (True, False)])
def test_prepend_decides_which_of_two_hooks_wins(tiny, tiny_seq, tiny_x, zero_first, prepend):
    def set_to_zero(act, hook):
        act[:] = 0.0
        return act

    def set_to_noise(act, hook):
        return torch.randn_like(act) * 0.1

    for is_zero in (zero_first, not zero_first):
        tiny.add_hook("layer3.post", set_to_zero if is_zero else set_to_noise, prepend=prepend)
    with torch.no_grad():
        logits = tiny(tiny_x)
    tiny.reset_hooks()
    bias_only = tiny_seq[4](torch.zeros(5, 8))
    # the zero hook runs last exactly when it was added second XOR it was prepended
    assert torch.equal(logits, bias_only) == (zero_first == prepend)


def test_reset_hooks_arguments(tiny):
    tiny.add_hook("layer0.post", identity)
    tiny.add_hook("layer1.post", identity, dir="bwd")
    perm = tiny.add_perma_hook("layer2.post", identity)
    tagged = tiny.add_hook("layer3.post", identity, level=7)
    tiny.hook_dict["layer0.post"].ctx["seen"] = 1
    tiny.reset_hooks(
        False, "fwd", False, 7
    )  # TransformerLens' order: clear_contexts, direction, including_permanent, level
    assert not tagged.attached and len(tiny.attached_hooks()) == 3
    assert tiny.hook_dict["layer0.post"].ctx == {"seen": 1}
    tiny.reset_hooks(direction="fwd")
    assert [(h.name, h.dir) for h in tiny.attached_hooks()] == [("layer1.post", "bwd"), ("layer2.post", "fwd")]
    assert tiny.hook_dict["layer0.post"].ctx == {}  # clear_contexts=True by default
    tiny.reset_hooks()
    assert tiny.attached_hooks() == [perm]
    tiny.reset_hooks(including_permanent=True)
    assert tiny.attached_hooks() == []


def test_list_hooks(tiny):
    a = tiny.add_hook("layer1.post", identity)
    b = tiny.add_hook("layer1.post", identity, dir="bwd", is_permanent=True)
    c = tiny.add_hook("layer3.pre", identity)
    try:
        assert tiny.list_hooks() == {"layer1.post": [a, b], "layer3.pre": [c]}
        assert tiny.list_hooks(dir="bwd") == {"layer1.post": [b]}
        assert tiny.list_hooks(including_permanent=False) == {"layer1.post": [a], "layer3.pre": [c]}
        assert tiny.list_hooks("layer3.pre") == {"layer3.pre": [c]}
    finally:
        tiny.reset_hooks(including_permanent=True)


# -- run_with_hooks' keywords -----------------------------------------------------------------------


def test_run_with_hooks_reset_hooks_end_false_keeps_backward_hooks_for_a_later_backward(tiny, tiny_seq, tiny_x):
    seen = []
    out = tiny.run_with_hooks(
        tiny_x, bwd_hooks=[("layer2.post", lambda grad, hook: seen.append(grad))], reset_hooks_end=False
    )
    assert len(tiny.hook_dict["layer2.post"].bwd_hooks) == 1  # still attached after the call
    out.sum().backward()
    leaf = chain(tiny_seq, tiny_x, 3).detach().requires_grad_(True)
    (ref,) = torch.autograd.grad(chain(tiny_seq[3:], leaf).sum(), [leaf])
    assert len(seen) == 1 and torch.equal(seen[0], ref)
    tiny.reset_hooks()
    assert tiny.attached_hooks() == []


def test_run_with_hooks_warns_when_backward_hooks_would_be_removed(tiny, tiny_x):
    # DIFFERENCE: TransformerLens logs this with logging.warning; we raise a UserWarning at the caller
    with pytest.warns(UserWarning, match="run_with_hooks removes its hooks at the end"):
        tiny.run_with_hooks(tiny_x, bwd_hooks=[("layer0.post", identity)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny.run_with_hooks(tiny_x, bwd_hooks=[("layer0.post", identity)], reset_hooks_end=False)
    tiny.reset_hooks()


def test_run_with_hooks_clear_contexts(tiny, tiny_x):
    def remember(act, hook):
        hook.ctx["n"] = hook.ctx.get("n", 0) + 1

    tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer1.pre", remember)])
    assert tiny.hook_dict["layer1.pre"].ctx == {"n": 1}
    tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer1.pre", remember)], clear_contexts=True)
    assert tiny.hook_dict["layer1.pre"].ctx == {}


def test_run_with_hooks_and_cache_pass_forward_keywords_and_reject_unknown_ones(tiny, tiny_seq, tiny_x):
    with torch.no_grad():
        out = tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer1.post", lambda a, hook: a * 2)], stop_at_layer=2)
    assert torch.equal(out, chain(tiny_seq, tiny_x, 2) * 2)
    with pytest.raises(UsageError, match=re.escape("run_with_cache() got unexpected keyword argument(s) 'pos_slice'")):
        tiny.run_with_cache(tiny_x, pos_slice=-1)  # DIFFERENCE: TransformerLens' pos_slice (no position axis here)
    with pytest.raises(
        UsageError, match=re.escape("run_with_hooks() got unexpected keyword argument(s) 'return_type'")
    ):
        tiny.run_with_hooks(tiny_x, return_type="loss")
    assert tiny.attached_hooks() == []


# -- deliberate improvements over TransformerLens ------------------------------------------------------------


def test_improvement_unknown_names_raise_with_did_you_mean(tiny, tiny_x):
    # TransformerLens: a KeyError from mod_dict (add_hook) or silently nothing (a filter, run_with_cache)
    msg = re.escape("unknown hook 'layer1.pots'; did you mean 'layer1.post'?")
    with pytest.raises(HookNameError, match=msg):
        tiny.add_hook("layer1.pots", identity)
    with pytest.raises(HookNameError, match=msg):
        tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer1.pots", identity)])
    with pytest.raises(HookNameError, match=msg):
        tiny.run_with_cache(tiny_x, names_filter=["layer1.pots"])
    with pytest.raises(HookNameError, match=re.escape("names filter '<lambda>' matched no hook point")):
        tiny.run_with_cache(tiny_x, names_filter=lambda name: name.startswith("blocks."))
    with pytest.raises(HookNameError, match=re.escape("names filter '<lambda>' matched no hook point")):
        tiny.add_hook(lambda name: False, identity)
    assert tiny.attached_hooks() == []


def test_improvement_a_wrong_result_raises_at_the_hook(tiny, tiny_x):
    # TransformerLens: torch's error later, in whichever module next reads the activation
    with pytest.raises(
        ShapeError,
        match=re.escape("returned shape [5, 7], expected [5, 8] (the shape of the activation at 'layer1.post')"),
    ):
        tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer1.post", lambda a, hook: a[:, :7])])
    with pytest.raises(
        TypeError,
        match=re.escape(
            "returned a torch.float64 tensor on cpu, expected torch.float32 on cpu (the activation at 'layer1.post')"
        ),
    ):
        tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer1.post", lambda a, hook: a.double())])
    with pytest.raises(TypeError, match=re.escape("returned a torch.bool tensor")):
        tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer4.post", lambda a, hook: a > 0)])
    assert tiny.attached_hooks() == []


def test_improvement_contexts_remove_exactly_their_own_hooks(tiny, tiny_x):
    # TransformerLens' hooks() removes every non-permanent hook at its level on exit, also one the user
    # added inside it at that level. DIFFERENCE: ours removes only what it attached; the user's stay.
    mine = tiny.add_hook("layer0.post", identity)
    with pytest.raises(RuntimeError, match="body"):
        with tiny.hooks(fwd_hooks=[("layer0.post", identity)]):
            inside = tiny.add_hook("layer1.post", identity, level=tiny.context_level)
            raise RuntimeError("body")
    assert tiny.attached_hooks() == [mine, inside]
    assert isinstance(inside, HookHandle) and inside.context_level == 1
    tiny.reset_hooks()


def test_improvement_add_hook_returns_a_handle(tiny):
    # DIFFERENCE: TransformerLens' HookedRootModule.add_hook and add_perma_hook return None
    handle = tiny.add_perma_hook("layer2.pre", identity)
    assert isinstance(handle, HookHandle) and handle.is_permanent
    handle.remove()
    assert tiny.attached_hooks() == []


def test_clean_activations_names_are_checked(tiny, tiny_x):
    with pytest.raises(UsageError, match=re.escape("names is empty; pass at least one hook name, e.g. 'layer4.post'")):
        tiny.clean_activations(tiny_x, [])
    with pytest.raises(HookNameError, match=re.escape("unknown hook 'layer9.post'; did you mean 'layer4.post'?")):
        tiny.clean_activations(tiny_x, ["layer9.post"])
    with pytest.raises(TypeError, match=re.escape("names must be a list of hook names, got str")):
        tiny.clean_activations(tiny_x, "layer0.post")


def test_residual_model_gets_the_same_api():
    from hookedmlp import ResidualConfig, ResidualMLP

    torch.manual_seed(0)
    model = ResidualMLP(ResidualConfig(d_in=6, d_model=4, d_mlp=5, n_blocks=2, d_out=3)).eval()
    x = torch.rand(2, 6)
    _, cache = model.run_with_cache(x)
    assert isinstance(cache, ActivationCache) and cache.cache_dict
    with pytest.raises(UsageError, match="names is empty"):
        model.clean_activations(x, [])
