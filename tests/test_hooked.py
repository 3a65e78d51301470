"""Hook management on a model: add_hook, HookGroup, hooks(), run_with_hooks, reset_hooks,
backward hooks against autograd, and cleanup when things go wrong."""

import re

import pytest
import torch

from hookedmlp import HookedMLP, HookGroup, HookHandle, HookNameError
from hookedmlp.hooks.point import check_hook_args


def noop(act, hook):
    return None


def manual(seq, x, edits=None):
    """The Sequential's forward, applying ``edits[i](activation)`` after module i."""
    edits = edits or {}
    h = x
    for i, m in enumerate(seq):
        h = m(h)
        if i in edits:
            h = edits[i](h)
    return h


def reference_with_grads(seq, x, loss_fn=lambda out: out.sum()):
    """Every module input/output of the Sequential, and d loss / d each, by autograd."""
    acts = [x.clone().requires_grad_(True)]
    for m in seq:
        acts.append(m(acts[-1]))
    grads = torch.autograd.grad(loss_fn(acts[-1]), acts)
    names = {}
    for i in range(len(seq)):
        names[f"layer{i}.pre"] = i
        names[f"layer{i}.post"] = i + 1
    return {n: acts[k].detach() for n, k in names.items()}, {n: grads[k] for n, k in names.items()}


# -- forward hooks ----------------------------------------------------------------------


def test_hook_returning_tensor_replaces_activation(tiny, tiny_seq, tiny_x):
    with torch.no_grad():
        out = tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer1.post", lambda a, hook: a * 0.5 - 1)])
        assert torch.equal(out, manual(tiny_seq, tiny_x, {1: lambda a: a * 0.5 - 1}))
        out = tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer2.pre", lambda a, hook: torch.flip(a, [1]))])
        assert torch.equal(out, manual(tiny_seq, tiny_x, {1: lambda a: torch.flip(a, [1])}))
        out = tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer0.pre", lambda a, hook: a.clamp(max=0.5))])
        assert torch.equal(out, tiny_seq(tiny_x.clamp(max=0.5)))
        out = tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer4.post", lambda a, hook: a.softmax(-1))])
        assert torch.equal(out, tiny_seq(tiny_x).softmax(-1))


def test_hook_returning_none_keeps_activation(tiny, tiny_seq, tiny_x):
    seen = {}
    with torch.no_grad():
        out = tiny.run_with_hooks(tiny_x, fwd_hooks=[("*", lambda a, hook: seen.__setitem__(hook.name, a.clone()))])
        assert torch.equal(out, tiny_seq(tiny_x))
        assert list(seen) == tiny.hook_names
        assert torch.equal(seen["layer2.post"], tiny_seq[2](tiny_seq[1](tiny_seq[0](tiny_x))))


def test_hooks_at_one_point_compose_in_order(tiny, tiny_seq, tiny_x):
    with torch.no_grad():
        out = tiny.run_with_hooks(
            tiny_x, fwd_hooks=[("layer0.post", lambda a, hook: a + 1), ("layer0.post", lambda a, hook: a * 2)]
        )
        assert torch.equal(out, manual(tiny_seq, tiny_x, {0: lambda a: (a + 1) * 2}))


def test_add_hook_returns_a_handle_removing_exactly_it(tiny, tiny_seq, tiny_x):
    h1 = tiny.add_hook("layer0.post", lambda a, hook: a + 1)
    h2 = tiny.add_hook("layer0.post", lambda a, hook: a * 2)
    h3 = tiny.add_hook("layer2.post", noop)
    try:
        assert isinstance(h1, HookHandle) and h1.name == "layer0.post"
        assert tiny.attached_hooks() == [h1, h2, h3]
        h1.remove()
        assert tiny.attached_hooks() == [h2, h3]
        with torch.no_grad():
            assert torch.equal(tiny(tiny_x), manual(tiny_seq, tiny_x, {0: lambda a: a * 2}))
    finally:
        h2.remove(), h3.remove()
    assert tiny.attached_hooks() == []
    with torch.no_grad():
        assert torch.equal(tiny(tiny_x), tiny_seq(tiny_x))


def test_add_hook_with_glob_returns_group(tiny):
    group = tiny.add_hook("*.post", noop)
    try:
        assert isinstance(group, HookGroup)
        assert [h.name for h in group] == [f"layer{i}.post" for i in range(5)]
        assert tiny.attached_hooks() == list(group)
    finally:
        group.remove()
    assert tiny.attached_hooks() == []
    group.remove()  # idempotent


def test_add_hook_with_callable_returns_group(tiny):
    other = tiny.add_hook("layer1.pre", noop)
    try:
        with tiny.add_hook(lambda n: n.startswith("layer3"), noop) as group:
            assert isinstance(group, HookGroup)
            assert [h.name for h in group] == ["layer3.pre", "layer3.post"]
            with tiny.add_hook("layer2.p?st", noop) as g2:  # a glob matching one name is still a group
                assert isinstance(g2, HookGroup) and [h.name for h in g2] == ["layer2.post"]
            assert len(tiny.attached_hooks()) == 3
        assert tiny.attached_hooks() == [other]
    finally:
        other.remove()


def test_resolve_names(tiny):
    assert tiny.resolve_names(None) == tiny.hook_names
    assert tiny.resolve_names("layer2.post") == ["layer2.post"]
    assert tiny.resolve_names(["layer4.post", "layer0.pre", "layer0.pre"]) == ["layer0.pre", "layer4.post"]
    assert tiny.resolve_names(["layer1.*", "*.post"]) == [
        "layer0.post",
        "layer1.pre",
        "layer1.post",
        "layer2.post",
        "layer3.post",
        "layer4.post",
    ]
    assert tiny.resolve_names(lambda n: n.endswith("pre") and "4" in n) == ["layer4.pre"]
    assert tiny.resolve_names("layer[13].pre") == ["layer1.pre", "layer3.pre"]
    with pytest.raises(
        HookNameError,
        match=re.escape("names filter is an empty list; pass None for all hook points or some of: layer0.pre, "),
    ):
        tiny.resolve_names([])
    with pytest.raises(TypeError):  # the annotation check or resolve_names' own check
        tiny.resolve_names(["layer0.pre", 3])


def test_add_hook_unknown_name(tiny):
    with pytest.raises(
        HookNameError,
        match=re.escape(
            "unknown hook 'layer0.pst'; did you mean 'layer0.post'? (valid: layer0.pre, layer0.post, layer1.pre"
        ),
    ):
        tiny.add_hook("layer0.pst", noop)
    with pytest.raises(HookNameError, match=re.escape("pattern 'blocks.*' matched no hook point")):
        tiny.add_hook("blocks.*", noop)
    with pytest.raises(
        HookNameError, match=re.escape("names filter '<lambda>' matched no hook point; hook names are: layer0.pre, ")
    ):
        tiny.add_hook(lambda n: False, noop)
    assert tiny.attached_hooks() == []


def test_hook_arg_checks_own_messages():
    # the shared check behind add_hook, hooks() and HookPoint.add_hook (their annotations are also checked under pytest)
    with pytest.raises(
        TypeError, match=re.escape("hook function must be callable as fn(activation, hook=...), got int")
    ):
        check_hook_args(5, "fwd")
    with pytest.raises(ValueError, match=re.escape("dir must be one of 'fwd', 'bwd', got 'up'")):
        check_hook_args(noop, "up")


def test_add_hook_bad_fn_or_dir_leaves_nothing(tiny):
    with pytest.raises(TypeError):
        tiny.add_hook("*", 5)
    with pytest.raises((TypeError, ValueError)):
        tiny.add_hook("*", noop, dir="up")
    assert tiny.attached_hooks() == []


def test_wrong_shape_or_type_from_model_hook(tiny, tiny_x):
    with pytest.raises(
        ValueError,
        match=re.escape("returned shape [5, 4], expected [5, 8] (the shape of the activation at 'layer2.post')"),
    ):
        tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer2.post", lambda a, hook: a[:, :4])])
    with pytest.raises(ValueError, match=re.escape("returned shape [1, 8], expected [5, 8]")):
        tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer1.pre", lambda a, hook: a[:1])])
    with pytest.raises(TypeError, match=re.escape("returned float; a hook must return a Tensor or None")):
        tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer3.pre", lambda a, hook: 1.0)])
    assert tiny.attached_hooks() == []


def test_hooks_on_one_model_do_not_affect_another(tiny, tiny_seq, tiny_x, small_cfg):
    other = HookedMLP.from_sequential(tiny_seq)
    with torch.no_grad(), tiny.hooks(fwd_hooks=[("*", lambda a, hook: a * 0)]):
        assert torch.equal(other(tiny_x), tiny_seq(tiny_x))
        assert torch.equal(tiny(tiny_x), torch.zeros(5, 3))


# -- contexts and reset_hooks -----------------------------------------------------------


def test_hooks_context_removes_exactly_its_own(tiny):
    user = tiny.add_hook("layer1.post", noop)
    perm = tiny.add_hook("layer1.post", noop, is_permanent=True)
    user_b = tiny.add_hook("layer0.pre", noop, dir="bwd")
    before = tiny.attached_hooks()
    with tiny.hooks(fwd_hooks=[("layer1.post", noop), ("*.pre", noop)], bwd_hooks=[("layer1.post", noop)]) as m:
        assert m is tiny
        assert len(tiny.attached_hooks()) == len(before) + 1 + 5 + 1
    assert tiny.attached_hooks() == before
    assert all(h.attached for h in (user, perm, user_b))
    tiny.reset_hooks(including_permanent=True)


def test_nested_contexts_unwind_in_order(tiny):
    outer_fn, inner_fn = (lambda a, hook: None), (lambda a, hook: None)
    with tiny.hooks(fwd_hooks=[("layer0.post", outer_fn)]):
        assert [h.fn for h in tiny.attached_hooks()] == [outer_fn]
        with tiny.hooks(fwd_hooks=[("layer0.post", inner_fn), ("layer4.post", inner_fn)]):
            assert [h.fn for h in tiny.attached_hooks()] == [outer_fn, inner_fn, inner_fn]
            with tiny.hooks(bwd_hooks=[("layer0.post", outer_fn)]):
                assert len(tiny.attached_hooks()) == 4
            assert [h.fn for h in tiny.attached_hooks()] == [outer_fn, inner_fn, inner_fn]
        assert [h.fn for h in tiny.attached_hooks()] == [outer_fn]
    assert tiny.attached_hooks() == []


def test_nested_contexts_compose(tiny, tiny_seq, tiny_x):
    with torch.no_grad(), tiny.hooks(fwd_hooks=[("layer0.post", lambda a, hook: a + 1)]):
        with tiny.hooks(fwd_hooks=[("layer0.post", lambda a, hook: a * 2)]):
            assert torch.equal(tiny(tiny_x), manual(tiny_seq, tiny_x, {0: lambda a: (a + 1) * 2}))
        assert torch.equal(tiny(tiny_x), manual(tiny_seq, tiny_x, {0: lambda a: a + 1}))


def test_reset_hooks_keeps_permanent(tiny, tiny_seq, tiny_x):
    tiny.add_hook("layer0.post", lambda a, hook: a + 1, is_permanent=True)
    tiny.add_hook("layer2.post", lambda a, hook: a * 0)
    tiny.add_hook("layer2.post", noop, dir="bwd")
    tiny.add_hook("layer3.pre", noop, dir="bwd", is_permanent=True)
    tiny.reset_hooks()
    assert [(h.name, h.dir) for h in tiny.attached_hooks()] == [("layer0.post", "fwd"), ("layer3.pre", "bwd")]
    with torch.no_grad():
        assert torch.equal(tiny(tiny_x), manual(tiny_seq, tiny_x, {0: lambda a: a + 1}))
    tiny.reset_hooks(including_permanent=True)
    assert tiny.attached_hooks() == []
    with torch.no_grad():
        assert torch.equal(tiny(tiny_x), tiny_seq(tiny_x))


def test_reset_hooks_inside_context_is_safe(tiny):
    keep = tiny.add_hook("layer0.pre", noop, is_permanent=True)
    with tiny.hooks(fwd_hooks=[("layer1.pre", noop)]):
        tiny.reset_hooks()
        assert tiny.attached_hooks() == [keep]
    assert tiny.attached_hooks() == [keep]
    keep.remove()


def test_exception_in_hook_fn_cleans_up(tiny, tiny_x):
    prev = tiny.add_hook("layer2.pre", noop)

    def boom(a, hook):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="^hook failed$"):
        tiny.run_with_hooks(tiny_x, fwd_hooks=[("layer0.post", noop), ("layer1.post", boom), ("layer4.post", noop)])
    assert tiny.attached_hooks() == [prev]
    with pytest.raises(RuntimeError, match="^hook failed$"):
        with tiny.hooks(fwd_hooks=[("layer1.post", boom)]):
            tiny(tiny_x)
    assert tiny.attached_hooks() == [prev]
    prev.remove()


def test_exception_in_body_cleans_up(tiny):
    prev = tiny.add_hook("layer2.pre", noop, is_permanent=True)
    with pytest.raises(KeyError, match="body"):
        with tiny.hooks(fwd_hooks=[("*", noop)], bwd_hooks=[("*.post", noop)]):
            assert len(tiny.attached_hooks()) == 16
            raise KeyError("body")
    assert tiny.attached_hooks() == [prev]
    prev.remove()


@pytest.mark.parametrize(
    "fwd,bwd,exc",
    [
        ([("layer0.post", noop), ("layer9.post", noop)], [], HookNameError),
        ([("layer0.post", noop), ("*.pots", noop)], [], HookNameError),
        ([("layer0.post", noop)], [("layer1.post", noop), ("nope", noop)], HookNameError),
        ([("layer0.post", noop), ("layer1.post", 5)], [], TypeError),
        ([("layer0.post", noop)], [("layer1.post", "not a function")], TypeError),
        ([("layer0.post", noop), ("layer1.post",)], [], TypeError),
        ([("layer0.post", noop), (3, noop)], [], TypeError),
    ],
)
def test_bad_entry_half_way_registers_nothing(tiny, fwd, bwd, exc):
    prev = tiny.add_hook("layer3.post", noop)
    with pytest.raises(exc):
        with tiny.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
            pass
    with pytest.raises(exc):
        tiny.run_with_hooks(torch.zeros(1, 16), fwd_hooks=fwd, bwd_hooks=bwd)
    assert tiny.attached_hooks() == [prev]
    prev.remove()


def test_unknown_name_message_in_list(tiny):
    with pytest.raises(HookNameError, match=re.escape("unknown hook 'layer9.post'; did you mean 'layer4.post'?")):
        with tiny.hooks(fwd_hooks=[("layer0.post", noop), ("layer9.post", noop)]):
            pass


def test_run_with_hooks_passes_arguments(tiny, tiny_seq, tiny_x):
    with torch.no_grad():
        out = tiny.run_with_hooks(tiny_x, stop_at="layer2.post", fwd_hooks=[("layer2.post", lambda a, hook: a * 2)])
        assert torch.equal(out, tiny_seq[2](tiny_seq[1](tiny_seq[0](tiny_x))) * 2)
    assert tiny.attached_hooks() == []


# -- backward hooks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [f"layer{i}.{p}" for i in range(5) for p in ("pre", "post")])
def test_backward_hook_sees_the_gradient(tiny, tiny_seq, tiny_x, name):
    _, ref_grads = reference_with_grads(tiny_seq, tiny_x)
    seen = []
    with tiny.hooks(bwd_hooks=[(name, lambda g, hook: seen.append(g.clone()))]):
        tiny(tiny_x).sum().backward()
    assert len(seen) == 1
    assert torch.equal(seen[0], ref_grads[name])


def test_backward_hook_replaces_the_gradient(tiny, tiny_seq, tiny_x):
    # reference: the weight gradients of plain autograd
    torch.manual_seed(0)
    ref = HookedMLP.from_sequential(tiny_seq)
    ref(tiny_x).sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in ref.named_parameters()}
    ref.zero_grad(set_to_none=True)
    with tiny.hooks(bwd_hooks=[("layer2.post", lambda g, hook: g * 2)]):
        tiny(tiny_x).sum().backward()
    got = {n: p.grad for n, p in tiny.named_parameters()}
    assert torch.equal(got["layer4.module.weight"], ref_grads["layer4.module.weight"])  # after the hook: untouched
    for n in ("layer2.module.weight", "layer2.module.bias", "layer0.module.weight", "layer0.module.bias"):
        assert torch.equal(got[n], 2 * ref_grads[n]), n


def test_backward_hook_zeroing_blocks_gradient(tiny, tiny_x):
    with tiny.hooks(bwd_hooks=[("layer1.post", lambda g, hook: torch.zeros_like(g))]):
        tiny(tiny_x).sum().backward()
    assert torch.equal(tiny.layer0.module.weight.grad, torch.zeros(8, 16))
    assert tiny.layer2.module.weight.grad.abs().sum() > 0


def test_backward_hook_on_input_gives_input_gradient(tiny, tiny_seq, tiny_x):
    _, ref_grads = reference_with_grads(tiny_seq, tiny_x)
    seen = []
    with tiny.hooks(bwd_hooks=[("layer0.pre", lambda g, hook: seen.append(g))]):
        tiny(tiny_x.reshape(5, 1, 4, 4)).sum().backward()
    assert torch.equal(seen[0], ref_grads["layer0.pre"])


def test_backward_hooks_removed_when_backward_happens_after_context(tiny, tiny_x):
    calls = []
    with tiny.hooks(bwd_hooks=[("layer2.post", lambda g, hook: calls.append(1))]):
        out = tiny(tiny_x)
    out.sum().backward()
    assert calls == []


def test_backward_hook_sees_forward_hook_output_gradient(tiny, tiny_seq, tiny_x):
    # a fwd hook scaling layer2.post by 4 multiplies the gradient reaching layer2's output by 4
    _, ref_grads = reference_with_grads(tiny_seq, tiny_x)
    seen = []
    with tiny.hooks(
        fwd_hooks=[("layer2.post", lambda a, hook: a * 4)], bwd_hooks=[("layer2.post", lambda g, hook: seen.append(g))]
    ):
        tiny(tiny_x).sum().backward()
    # the bwd hook is registered on the activation as it enters the point, i.e. before the fwd hook
    assert torch.equal(seen[0], 4 * ref_grads["layer2.post"])


def test_backward_hooks_run_in_backward_order(tiny, tiny_seq, tiny_x):
    # The gradient at layer0.post is what comes back through layer1.pre. A bwd hook at layer1.pre that
    # doubles the gradient must therefore be seen by a bwd hook at layer0.post. Both points register a
    # tensor hook on the *same* tensor, and tensor hooks run in registration (= forward) order, so the
    # hook at layer0.post sees the gradient before layer1.pre's hook has doubled it.
    _, ref_grads = reference_with_grads(tiny_seq, tiny_x)
    seen = []
    with tiny.hooks(bwd_hooks=[("layer1.pre", lambda g, hook: g * 2), ("layer0.post", lambda g, hook: seen.append(g))]):
        tiny(tiny_x).sum().backward()
    assert torch.equal(seen[0], 2 * ref_grads["layer0.post"])
