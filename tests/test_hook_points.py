"""HookPoint and HookHandle on their own: identity, replacing/keeping activations,
handles, permanence, backward hooks, errors for bad hook results, repr."""

import re

import pytest
import torch

from hookedmlp import HookHandle, HookPoint


@pytest.fixture
def hp():
    p = HookPoint()
    p.name = "blocks.0.hook"
    return p


def test_identity_without_hooks(hp):
    x = torch.rand(3, 4)
    assert hp(x) is x
    assert not hp.has_hooks()
    assert HookPoint().name is None  # as in TransformerLens: the owning model names it in setup()


def test_hook_returning_tensor_replaces_and_none_keeps(hp):
    x = torch.rand(3, 4)
    seen = []
    h1 = hp.add_hook(lambda a, hook: seen.append(a) or None)
    h2 = hp.add_hook(lambda a, hook: a * 2 + 1)
    h3 = hp.add_hook(lambda a, hook: seen.append(a))
    try:
        out = hp(x)
        assert torch.equal(out, x * 2 + 1)
        assert seen[0] is x  # the first hook saw the input
        assert torch.equal(seen[1], x * 2 + 1)  # the third saw the replaced activation
    finally:
        for h in (h1, h2, h3):
            h.remove()


def test_hooks_run_in_registration_order(hp):
    handles = [hp.add_hook(lambda a, hook: a + 1), hp.add_hook(lambda a, hook: a * 3)]
    try:
        x = torch.tensor([1.0, 2.0])
        assert torch.equal(hp(x), torch.tensor([6.0, 9.0]))  # (x + 1) * 3, not x * 3 + 1
    finally:
        for h in handles:
            h.remove()


def test_hook_receives_the_hook_point(hp):
    got = []
    with hp.add_hook(lambda a, hook: got.append(hook)):
        hp(torch.zeros(1))
    assert got == [hp]


def test_handle_removes_exactly_itself(hp):
    f = lambda a, hook: a + 1  # noqa: E731
    h1, h2, h3 = hp.add_hook(f), hp.add_hook(f), hp.add_hook(f)
    assert hp.fwd_hooks == [h1, h2, h3]
    h2.remove()
    assert hp.fwd_hooks == [h1, h3]
    assert torch.equal(hp(torch.zeros(2)), torch.full((2,), 2.0))
    h2.remove()  # idempotent
    assert hp.fwd_hooks == [h1, h3]
    assert not h2.attached and h1.attached
    assert h2.name == "<removed>" and h1.name == "blocks.0.hook"
    h1.remove(), h3.remove()
    assert not hp.has_hooks()


def test_handle_as_context_manager(hp):
    with hp.add_hook(lambda a, hook: a * 0) as h:
        assert isinstance(h, HookHandle) and h.attached
        assert hp.has_hooks("fwd") and not hp.has_hooks("bwd")
        assert torch.equal(hp(torch.ones(2)), torch.zeros(2))
    assert not h.attached and not hp.has_hooks()
    assert torch.equal(hp(torch.ones(2)), torch.ones(2))


def test_hook_removing_itself_during_the_pass(hp):
    calls = []
    handles = []

    def once(a, hook):
        calls.append("once")
        handles[0].remove()
        return a + 1

    handles.append(hp.add_hook(once))
    with hp.add_hook(lambda a, hook: calls.append("second")):
        assert torch.equal(hp(torch.zeros(1)), torch.ones(1))
        assert torch.equal(hp(torch.zeros(1)), torch.zeros(1))
    assert calls == ["once", "second", "second"]


def test_remove_hooks_and_permanence(hp):
    f = lambda a, hook: None  # noqa: E731
    tmp_f, perm_f = hp.add_hook(f), hp.add_hook(f, is_permanent=True)
    tmp_b, perm_b = hp.add_hook(f, dir="bwd"), hp.add_hook(f, dir="bwd", is_permanent=True)
    hp.remove_hooks()  # TransformerLens' default: dir="fwd", permanent hooks kept
    assert hp.fwd_hooks == [perm_f] and hp.bwd_hooks == [tmp_b, perm_b]
    hp.remove_hooks("bwd")
    assert hp.fwd_hooks == [perm_f] and hp.bwd_hooks == [perm_b]
    assert not tmp_f.attached and not tmp_b.attached
    hp.remove_hooks("bwd", including_permanent=True)
    assert hp.fwd_hooks == [perm_f] and hp.bwd_hooks == []
    hp.remove_hooks("both", including_permanent=True)
    assert not hp.has_hooks() and not perm_f.attached


def test_remove_hooks_rejects_an_unknown_direction(hp):
    keep = hp.add_hook(lambda g, hook: None, dir="bwd")
    with pytest.raises(ValueError, match=re.escape("dir must be one of 'fwd', 'bwd', 'both', got 'backward'")):
        hp.remove_hooks("backward")
    with pytest.raises(ValueError, match=re.escape("got 'sideways'")):
        hp.has_hooks("sideways")
    assert hp.bwd_hooks == [keep]  # nothing was removed
    keep.remove()


def test_wrong_shape_result_raises(hp):
    with hp.add_hook(lambda a, hook: a[:2]):
        with pytest.raises(
            ValueError,
            match=re.escape(
                "hook HookHandle('blocks.0.hook', fwd, fn=test_wrong_shape_result_raises.<locals>.<lambda>) "
                "returned shape [2, 4], expected [3, 4] (the shape of the activation at 'blocks.0.hook')"
            ),
        ):
            hp(torch.zeros(3, 4))


@pytest.mark.parametrize("result,typename", [(3, "int"), ([1.0], "list"), ((torch.zeros(1),), "tuple")])
def test_non_tensor_result_raises(hp, result, typename):
    with hp.add_hook(lambda a, hook: result):
        with pytest.raises(TypeError, match=re.escape(f"returned {typename}; a hook must return a Tensor or None")):
            hp(torch.zeros(1))


def test_add_hook_argument_checks(hp):
    # add_hook's own checks (the runtime annotation check may reject these first: TypeError either way)
    with pytest.raises(TypeError):
        hp.add_hook(5)
    with pytest.raises((ValueError, TypeError), match="fwd"):
        hp.add_hook(lambda a, hook: None, dir="sideways")
    assert not hp.has_hooks()


def test_backward_hook_sees_and_replaces_gradient(hp):
    x = torch.tensor([1.0, 2.0, 3.0])
    w = torch.tensor([0.5, -1.0, 2.0])
    seen = []
    with hp.add_hook(lambda g, hook: seen.append(g.clone()), dir="bwd"), hp.add_hook(lambda g, hook: g * 10, dir="bwd"):
        y = hp(x)  # x does not require grad: the hook point makes it a leaf that does
        assert y.requires_grad
        (y * w).sum().backward()
    assert len(seen) == 1 and torch.equal(seen[0], w)


def test_backward_hook_replacement_reaches_input():
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    p = HookPoint()
    with p.add_hook(lambda g, hook: g * 10, dir="bwd"):
        (p(x * 1) * 2).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 20.0))


def test_backward_hook_removed_before_backward_does_not_run(hp):
    calls = []
    h = hp.add_hook(lambda g, hook: calls.append(1), dir="bwd")
    y = hp(torch.ones(2))
    h.remove()
    y.sum().backward()
    assert calls == []


def test_backward_hook_added_after_forward_does_not_run(hp):
    calls = []
    x = torch.ones(2, requires_grad=True)
    y = hp(x * 1)
    with hp.add_hook(lambda g, hook: calls.append(1), dir="bwd"):
        y.sum().backward()
    assert calls == []


def test_no_backward_registration_without_grad(hp):
    with hp.add_hook(lambda g, hook: None, dir="bwd"), torch.no_grad():
        y = hp(torch.ones(2))
    assert not y.requires_grad


def test_backward_hook_only_fires_for_gradients_through_the_hook_point(hp):
    # HookPoint.forward calls x.register_hook on the incoming tensor itself. When that tensor is
    # a leaf owned by the caller, the hook stays registered on it after the pass: a later, unrelated
    # backward through x (not through the hook point) still runs the bwd hook, and every extra pass
    # through hp adds another registration.
    calls = []
    x = torch.ones(2, requires_grad=True)
    with hp.add_hook(lambda g, hook: calls.append(g.clone()), dir="bwd"):
        hp(x)
        hp(x)
        (x * 3).sum().backward()  # never went through the hook point
    assert calls == []


def test_repr(hp):
    # TransformerLens' HookPoint repr: the name, then the hook counts that are not zero
    assert repr(HookPoint()) == "HookPoint()"
    assert repr(hp) == "HookPoint(name='blocks.0.hook')"

    def my_hook(a, hook):
        return None

    h = hp.add_hook(my_hook, is_permanent=True)
    b = hp.add_hook(my_hook, dir="bwd")
    assert repr(hp) == "HookPoint(name='blocks.0.hook', 1 fwd, 1 bwd)"
    assert repr(h) == "HookHandle('blocks.0.hook', fwd, fn=test_repr.<locals>.my_hook, permanent)"
    assert repr(b) == "HookHandle('blocks.0.hook', bwd, fn=test_repr.<locals>.my_hook)"
    h.remove(), b.remove()
    assert repr(h) == "HookHandle('<removed>', fwd, fn=test_repr.<locals>.my_hook, permanent, removed)"


def test_handle_fields(hp):
    # TransformerLens' LensHandle fields: user_hook, is_permanent, context_level, and hook.remove()
    f = lambda a, hook: None  # noqa: E731
    with hp.add_hook(f) as a, hp.add_hook(f, is_permanent=True, level=3) as b:
        assert a is not b and a.fn is f and a.user_hook is f and a.dir == "fwd"
        assert (a.is_permanent, a.context_level) == (False, None)
        assert (b.is_permanent, b.context_level) == (True, 3)
        b.hook.remove()
        assert hp.fwd_hooks == [a] and not b.attached


def test_hooks_suppressed_runs_only_observers_and_can_be_entered_again(hp):
    from hookedmlp.hooks.point import Observer, hooks_suppressed

    class Reader(Observer):
        def __init__(self):
            self.seen = 0

        def __call__(self, act, hook):
            self.seen += 1

    reader = Reader()
    with hp.add_hook(lambda a, hook: a + 1), hp.add_hook(reader):
        quiet = hooks_suppressed()
        with quiet:
            with quiet:  # the same object, nested
                assert torch.equal(hp(torch.zeros(1)), torch.zeros(1))
            assert torch.equal(hp(torch.zeros(1)), torch.zeros(1))
        with quiet:  # and again after it exited
            assert torch.equal(hp(torch.zeros(1)), torch.zeros(1))
        assert torch.equal(hp(torch.zeros(1)), torch.ones(1))
    assert reader.seen == 4
