"""The context objects of steer / ablate / patch / clamp (HookContext), used as users do: entered
again after they exit, refused while active, restoring exactly on exceptions and out-of-order
exits, adding up when nested, and never touching the user's own hooks.

Reference: conftest's ``tiny_seq`` run module by module in plain torch, with the edits applied
in attachment order.
"""

import pytest
import torch

from hookedmlp import SteeringVector, UsageError


def reference(seq, x, edits):
    """Plain torch, module by module; ``edits`` is [(hook, fn)] in attachment order."""
    h = x
    with torch.no_grad():
        for i, m in enumerate(seq):
            for name, fn in edits:
                h = fn(h) if name == f"layer{i}.pre" else h
            h = m(h)
            for name, fn in edits:
                h = fn(h) if name == f"layer{i}.post" else h
    return h


def seeded(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def contexts(tiny):
    """Each kind of context with its reference edit: ``{kind: (make_context, [(hook, fn)])}``."""
    v = SteeringVector({"layer0.post": seeded(1, 8), "layer2.post": seeded(2, 8)})
    d = seeded(3, 8)
    u = d / d.norm()
    new = seeded(4, 8)

    def fix(a):
        a = a.clone()
        a[:, [1, 5]] = 2.0
        return a

    return {
        "steer": (
            lambda: tiny.steer(v, coeff=0.5),
            [
                ("layer0.post", lambda a: a + 0.5 * v["layer0.post"]),
                ("layer2.post", lambda a: a + 0.5 * v["layer2.post"]),
            ],
        ),
        "steer_ab": (lambda: tiny.steer(a=seeded(5, 16), b=seeded(6, 16), hook="layer1.post"), None),
        "ablate": (lambda: tiny.ablate(d, "layer1.post"), [("layer1.post", lambda a: a - (a @ u).unsqueeze(-1) * u)]),
        "patch": (lambda: tiny.patch("layer3.post", new), [("layer3.post", lambda a: new.expand_as(a).clone())]),
        "clamp": (lambda: tiny.clamp("layer2.pre", [1, 5], 2.0), [("layer2.pre", fix)]),
    }


KINDS = ["steer", "steer_ab", "ablate", "patch", "clamp"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_context_can_be_entered_again_but_not_while_active(tiny, tiny_x, contexts, kind):
    make, _ = contexts[kind]
    base = tiny(tiny_x)
    ctx = make()
    with ctx as entered:
        assert entered is tiny
        first = tiny(tiny_x)
        n = len(tiny.attached_hooks())
        with pytest.raises(
            UsageError,
            match=r"this hook context is already active; make a new one \(e.g. call "
            r"model.steer\(...\) again\) to nest",
        ):
            ctx.__enter__()
        assert len(tiny.attached_hooks()) == n  # the refused entry attached nothing, removed nothing
        assert torch.equal(tiny(tiny_x), first)
    assert tiny.attached_hooks() == [] and torch.equal(tiny(tiny_x), base) and tiny.context_level == 0
    for _ in range(3):
        with ctx:
            assert len(tiny.attached_hooks()) == n
            assert torch.equal(tiny(tiny_x), first)
        assert tiny.attached_hooks() == []
    assert "inactive" in repr(ctx)


@pytest.mark.parametrize("kind", KINDS)
def test_an_exception_inside_restores_exactly_and_user_hooks_survive(tiny, tiny_seq, tiny_x, contexts, kind):
    make, _ = contexts[kind]
    user = tiny.add_hook("layer2.post", lambda act, hook: act * 0.5)
    perm = tiny.add_hook("layer3.pre", lambda act, hook: act + 0.25, is_permanent=True)
    late = None
    try:
        before = tiny.attached_hooks()
        with_user = tiny(tiny_x)
        assert torch.equal(
            with_user,
            reference(tiny_seq, tiny_x, [("layer2.post", lambda a: a * 0.5), ("layer3.pre", lambda a: a + 0.25)]),
        )
        with pytest.raises(KeyError, match="inside"):
            with make():
                assert len(tiny.attached_hooks()) > len(before)
                late = tiny.add_hook("layer1.pre", lambda act, hook: None)  # a user hook added inside the block
                raise KeyError("inside")
        after = tiny.attached_hooks()  # in forward order: layer1.pre, layer2.post, layer3.pre
        assert len(after) == 3 and all(a is b for a, b in zip(after, [late, *before]))
        late.remove()
        assert all(a is b for a, b in zip(tiny.attached_hooks(), before)) and user.attached and perm.attached
        assert torch.equal(tiny(tiny_x), with_user)
    finally:
        for h in (user, perm, late):
            if h is not None:
                h.remove()


def test_nesting_adds_up_in_attachment_order(tiny, tiny_seq, tiny_x, contexts):
    edits = []
    with contexts["steer"][0]():
        edits += contexts["steer"][1]
        with contexts["clamp"][0](), contexts["ablate"][0](), contexts["patch"][0]():
            edits += contexts["clamp"][1] + contexts["ablate"][1] + contexts["patch"][1]
            assert len(tiny.attached_hooks()) == 5
            torch.testing.assert_close(tiny(tiny_x), reference(tiny_seq, tiny_x, edits), rtol=1e-6, atol=1e-6)
        # the same vector twice at one hook: the two additions add up
        v = SteeringVector({"layer1.post": seeded(7, 8)})
        with tiny.steer(v), tiny.steer(v, coeff=2.0):
            twice = tiny(tiny_x)
        with tiny.steer(3 * v):
            thrice = tiny(tiny_x)
        torch.testing.assert_close(twice, thrice, rtol=1e-6, atol=1e-6)
        assert len(tiny.attached_hooks()) == 2
    assert tiny.attached_hooks() == []
    assert torch.equal(tiny(tiny_x), reference(tiny_seq, tiny_x, []))


def test_out_of_order_exits_and_reset_hooks_inside(tiny, tiny_x, contexts):
    base = tiny(tiny_x)
    outer, inner = contexts["steer"][0](), contexts["clamp"][0]()
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the outer one leaves first: exactly its two hooks go
    assert [h.name for h in tiny.attached_hooks()] == ["layer2.pre"]
    inner.__exit__(None, None, None)
    assert tiny.attached_hooks() == [] and tiny.context_level == 0
    with contexts["patch"][0]():
        tiny.reset_hooks()  # removes the context's hook under it; leaving must not fail
        assert torch.equal(tiny(tiny_x), base)
    assert tiny.attached_hooks() == [] and torch.equal(tiny(tiny_x), base)
