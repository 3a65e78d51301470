"""TransformerLens 4.3.0 parity for hooks, beyond TransformerLens' own tests (ported in tests/test_tl_ported.py):
keyword order and defaults, gradients and results checked against plain torch on our layout
(``layer{i}.pre`` / ``layer{i}.post``), TransformerLens' extension points, and each deliberate
difference, asserted as such (``DIFFERENCE:``).

Caching is in tests/test_tl_parity_cache.py; docs/transformerlens.md has the table of names.
"""

import re
import warnings

import pytest
import torch

from hookedmlp import ActivationCache, HookHandle, HookNameError, HookPoint, ShapeError, UsageError
from hookedmlp.hooks.conversion import BaseTensorConversion


def identity(act, hook):
    return act


def chain(seq, x, upto=None):
    for m in list(seq)[:upto]:
        x = m(x)
    return x


# -- HookPoint -------------------------------------------------------------------------------


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


def test_nested_contexts_tag_their_hooks_with_their_level(tiny):
    hp = tiny.hook_dict["layer0.pre"]
    with tiny.hooks(fwd_hooks=[("layer0.pre", identity)]):
        assert tiny.context_level == 1 and hp.fwd_hooks[0].context_level == 1
        with tiny.hooks(fwd_hooks=[("layer0.pre", identity)]):
            assert tiny.context_level == 2 and hp.fwd_hooks[1].context_level == 2
    assert tiny.context_level == 0 and hp.fwd_hooks == []


def test_backward_hook_returning_a_tuple_replaces_the_gradient(tiny, tiny_seq, tiny_x):
    leaf = tiny_x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(tiny_seq(leaf).sum(), [leaf])
    with tiny.hooks(bwd_hooks=[("layer2.post", lambda grad, hook: (grad * 2,))]):
        x = tiny_x.clone().requires_grad_(True)
        tiny(x).sum().backward()
    assert torch.allclose(x.grad, 2 * ref, atol=1e-6)


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
        assert tiny.list_hooks("*.post", dir="fwd") == {"layer1.post": [a]}
        # DIFFERENCE: TransformerLens lists nothing for an unknown name; ours says so, as add_hook does
        with pytest.raises(HookNameError, match=re.escape("unknown hook 'layer1.pots'; did you mean 'layer1.post'?")):
            tiny.list_hooks("layer1.pots")
    finally:
        tiny.reset_hooks(including_permanent=True)


def test_handle_ids_count_up_like_pytorchs(tiny):
    a = tiny.add_hook("layer0.post", identity)
    b = tiny.add_hook("layer0.post", identity, dir="bwd")
    assert b.hook.id == a.hook.id + 1 and a.hook is a
    a.hook.remove(), b.remove()
    assert tiny.attached_hooks() == []


# -- TransformerLens' extension points ------------------------------------------------------------


def test_check_hooks_to_add_runs_for_every_point_before_any_is_attached(tiny):
    seen = []

    class Refusing(type(tiny)):
        def check_hooks_to_add(self, hook_point, hook_point_name, hook, dir="fwd", is_permanent=False, prepend=False):
            seen.append((hook_point is self.hook_dict[hook_point_name], hook_point_name, dir, is_permanent, prepend))
            assert hook_point_name != "layer2.post", f"Cannot add hook {hook_point_name}"

    tiny.__class__ = Refusing  # the same model, with the override
    with pytest.raises(AssertionError, match="Cannot add hook layer2.post"):
        tiny.add_hook("*.post", identity, dir="bwd", is_permanent=True, prepend=True)
    assert seen == [(True, f"layer{i}.post", "bwd", True, True) for i in range(3)]
    assert tiny.attached_hooks() == []  # layer0.post and layer1.post were checked, not attached
    handle = tiny.check_and_add_hook(tiny.hook_dict["layer1.post"], "layer1.post", identity, level=3)
    assert tiny.attached_hooks() == [handle] and handle.context_level == 3
    with pytest.raises(AssertionError):
        tiny.check_and_add_hook(tiny.hook_dict["layer2.post"], "layer2.post", identity)
    tiny.reset_hooks()


def test_enable_hook_helpers_attach_at_the_context_level_and_check_the_name(tiny):
    with tiny.hooks():
        handle = tiny._enable_hook("layer1.pre", identity, "fwd")
        group = tiny._enable_hook(lambda name: name.endswith("3.post"), identity, "bwd")
    assert handle.context_level == 1 and [(h.name, h.dir, h.context_level) for h in group] == [
        ("layer3.post", "bwd", 1)
    ]
    with pytest.raises(HookNameError, match=re.escape("unknown module 'layer1.pr'; did you mean 'layer1.pre'?")):
        tiny._enable_hook_with_name("layer1.pr", identity, "fwd")
    tiny.reset_hooks()


def test_cache_all_and_cache_some_are_deprecated_add_caching_hooks(tiny, tiny_x, caplog):
    cache: dict = {}
    with caplog.at_level("WARNING", logger="hookedmlp"):
        tiny.cache_some(cache, lambda name: name == "layer1.post")
    assert "cache_some is deprecated" in caplog.text and tiny.is_caching
    with torch.no_grad():
        tiny(tiny_x)
    assert list(cache) == ["layer1.post"]
    tiny.reset_hooks()
    with caplog.at_level("WARNING", logger="hookedmlp"):
        tiny.cache_all(cache)
    assert "cache_all is deprecated" in caplog.text
    with torch.no_grad():
        tiny(tiny_x)
    assert set(cache) == set(tiny.hook_names) and len(tiny.attached_hooks()) == 10
    tiny.reset_hooks()


# -- enable_reshape ---------------------------------------------------------------------------------


class Halves(BaseTensorConversion):
    """[batch, 8] -> [batch, 2, 4]: hooks see two halves."""

    def handle_conversion(self, x, *context):
        return x.reshape(x.shape[0], 2, 4)

    def revert(self, x, *context):
        return x.reshape(x.shape[0], 8)


def test_reshape_shows_hooks_and_caches_the_converted_activation(tiny, tiny_seq, tiny_x):
    first_half, second_half = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [1.0]])
    h1 = chain(tiny_seq, tiny_x, 2)
    hp = tiny.hook_dict["layer1.post"]
    hp.enable_reshape(Halves())
    try:
        with torch.no_grad():
            out = tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer1.post", lambda a, hook: a * first_half)])
            _, cache = tiny.run_with_cache(tiny_x, names_filter="layer1.post")
        assert torch.equal(out, chain(tiny_seq[2:], h1 * torch.tensor([1.0] * 4 + [0.0] * 4)))
        # as in TransformerLens, the cache holds what hooks see: the converted activation
        assert torch.equal(cache["layer1.post"], h1.reshape(5, 2, 4))
        # backward hooks see the converted gradient too, and what they return is reverted
        x = tiny_x.clone().requires_grad_(True)
        with tiny.hooks(bwd_hooks=[("layer1.post", lambda g, hook: g * second_half)]):
            tiny(x).sum().backward()
    finally:
        hp.enable_reshape(None)
    leaf = h1.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(chain(tiny_seq[2:], leaf).sum(), [leaf])
    x2 = tiny_x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(chain(tiny_seq, x2, 2), [x2], g * torch.tensor([0.0] * 4 + [1.0] * 4))
    assert torch.allclose(x.grad, want, atol=1e-6)
    with pytest.raises(TypeError, match=re.escape("enable_reshape() takes a BaseTensorConversion")):
        hp.enable_reshape(lambda x: x)
    with pytest.raises(NotImplementedError, match="must implement handle_conversion"):
        BaseTensorConversion().convert(torch.zeros(1))


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
