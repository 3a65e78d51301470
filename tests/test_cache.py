"""run_with_cache against plain-torch references, and the ActivationCache mapping."""

import re

import pytest
import torch
from torch import nn

from hookedmlp import ActivationCache, HookedMLP, HookNameError, ShapeError

NAMES = [f"layer{i}.{p}" for i in range(5) for p in ("pre", "post")]


def reference(seq, x):
    """Activations at every hook point, module by module with the Sequential's own modules,
    and the gradient of logits.sum() with respect to each (torch.autograd.grad)."""
    leaf = x.reshape(x.shape[0], -1).clone().requires_grad_(True)
    outs = [leaf]
    for m in seq:
        outs.append(m(outs[-1]))
    grads = torch.autograd.grad(outs[-1].sum(), outs)
    acts, grad = {}, {}
    for i in range(len(seq)):
        for name, k in ((f"layer{i}.pre", i), (f"layer{i}.post", i + 1)):
            acts[name] = outs[k].detach()
            grad[name] = grads[k]
    return acts, grad


def test_every_hook_point_equals_reference(tiny, tiny_seq, tiny_x):
    acts, _ = reference(tiny_seq, tiny_x)
    out, cache = tiny.run_with_cache(tiny_x)
    assert isinstance(cache, ActivationCache)
    assert list(cache) == NAMES
    for name in NAMES:
        assert torch.equal(cache[name], acts[name]), name
    assert torch.equal(out, tiny_seq(tiny_x))
    # spot checks written out by hand
    assert torch.equal(cache["layer0.pre"], tiny_x)
    assert torch.equal(cache["layer0.post"], tiny_seq[0](tiny_x))
    assert torch.equal(cache["layer1.post"], torch.relu(tiny_seq[0](tiny_x)))
    assert torch.equal(cache["layer4.post"], out.detach())


@pytest.mark.parametrize("shape", [(5, 16), (5, 1, 4, 4), (5, 4, 4)])
def test_image_shaped_inputs_are_cached_flat(tiny, tiny_seq, tiny_x, shape):
    _, cache = tiny.run_with_cache(tiny_x.reshape(shape))
    assert cache["layer0.pre"].shape == (5, 16)
    assert torch.equal(cache["layer0.pre"], tiny_x)
    assert torch.equal(cache["layer4.post"], tiny_seq(tiny_x).detach())


def test_post_equals_next_pre(tiny, tiny_x):
    _, cache = tiny.run_with_cache(tiny_x)
    for i in range(4):
        assert torch.equal(cache[f"layer{i}.post"], cache[f"layer{i + 1}.pre"])


def test_cache_holds_detached_references_not_copies(tiny, tiny_x):
    # As in TransformerLens (``tensor.detach()``): an entry is the pass's own tensor, detached.
    # The modules' outputs are seen with PyTorch's own hooks, which are not hookedmlp hooks.
    outputs = {}
    handles = [
        layer.module.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o))
        for k, layer in enumerate(tiny._layers)
    ]
    try:
        out, cache = tiny.run_with_cache(tiny_x)
    finally:
        for h in handles:
            h.remove()
    assert out.requires_grad
    for i in range(5):
        entry = cache[f"layer{i}.post"]
        assert not entry.requires_grad and entry.grad_fn is None
        assert entry.data_ptr() == outputs[i].data_ptr() and torch.equal(entry, outputs[i].detach())
    for i in range(4):  # one activation, one entry object
        assert cache[f"layer{i}.post"] is cache[f"layer{i + 1}.pre"]
    assert cache["layer0.pre"].data_ptr() == tiny_x.data_ptr()  # the caller's own input, not a copy


def test_only_entries_a_later_hook_could_edit_are_copied(tiny, tiny_x):
    # A hook (not a cache) at layer2.pre gets the tensor cached as layer1.post: that entry alone is
    # copied before the hook runs; every other entry stays a reference.
    seen = {}
    with tiny.hooks(fwd_hooks=[("layer2.pre", lambda a, hook: seen.__setitem__("act", a))]):
        _, cache = tiny.run_with_cache(tiny_x)
    assert cache["layer1.post"].data_ptr() != seen["act"].data_ptr()
    assert torch.equal(cache["layer1.post"], seen["act"].detach())
    assert cache["layer2.pre"].data_ptr() == seen["act"].data_ptr()  # recorded after the hook: a reference
    storages = {t.untyped_storage().data_ptr() for t in cache.values()}
    assert len(storages) == 7  # the 6 distinct activations, plus the one copy


def test_later_in_place_edit_does_not_reach_cache(tiny, tiny_seq, tiny_x):
    # a hook at layer1.pre zeroes, in place, the very tensor layer0.post produced
    expected = tiny_seq[0](tiny_x).detach()
    for names_filter in (None, "layer0.post", ["layer0.post", "layer1.pre"]):
        with tiny.hooks(fwd_hooks=[("layer1.pre", lambda a, hook: a.mul_(0))]):
            out, cache = tiny.run_with_cache(tiny_x, names_filter=names_filter)
        assert expected.abs().sum() > 0
        assert torch.equal(cache["layer0.post"], expected), names_filter
        if "layer1.pre" in cache:
            assert torch.equal(cache["layer1.pre"], torch.zeros(5, 8))
        # and the edit did take effect downstream
        zeros = torch.zeros(5, 8)
        assert torch.equal(out, tiny_seq[4](tiny_seq[3](tiny_seq[2](tiny_seq[1](zeros)))))


def test_the_output_and_the_last_entry_are_one_tensor(tiny, tiny_x):
    # Deliberate (entries are references): an in-place edit of the output after the pass is an
    # edit of cache["layer4.post"], as of any two keys that share one tensor.
    with torch.no_grad():
        out, cache = tiny.run_with_cache(tiny_x)
        assert cache["layer4.post"].data_ptr() == out.data_ptr()
        out.mul_(0)
    assert torch.equal(cache["layer4.post"], torch.zeros(5, 3))
    cache.cache_dict["layer4.post"] = cache["layer4.post"].clone()  # how to keep one apart


@pytest.fixture
def conv_net():
    """Conv -> ReLU -> Flatten -> Linear: Flatten's output is a view of the ReLU's."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    return net, HookedMLP.from_module(net, input_shape=(1, 4, 4)).eval()


@pytest.mark.parametrize("where", ["layer2.post", "layer3.pre"])
def test_in_place_edit_through_a_view_does_not_reach_cache(conv_net, where):
    # layer1.post (the ReLU's output) and layer2.post (Flatten's view of it) share one storage: a hook
    # zeroing the view in place must leave what was cached before it untouched.
    net, model = conv_net
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        relu = net[1](net[0](x))
        with model.hooks(fwd_hooks=[(where, lambda a, hook: a.mul_(0))]):
            out, cache = model.run_with_cache(x)
    assert relu.abs().sum() > 0
    assert torch.equal(cache["layer1.post"], relu) and torch.equal(cache["layer2.pre"], relu)
    if where == "layer3.pre":
        assert torch.equal(cache["layer2.post"], relu.flatten(1))
    assert torch.equal(cache["layer3.pre"], torch.zeros(5, 8))  # what the Linear saw
    assert torch.equal(out, net[3](torch.zeros(5, 8)))


def test_cache_holds_only_the_distinct_activations(conv_net):
    # 8 hook points, 4 distinct activations (the input, the conv's, the ReLU's = Flatten's view, the logits):
    # the cache's storages are exactly those, at their sizes.
    net, model = conv_net
    x = torch.rand(6, 1, 4, 4)
    with torch.no_grad():
        _, cache = model.run_with_cache(x)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in cache.values()}
    assert len(storages) == 4
    assert sum(storages.values()) == 4 * 6 * (16 + 8 + 8 + 3)
    assert x.untyped_storage().data_ptr() in storages


def test_cache_sees_activation_after_other_hooks(tiny, tiny_seq, tiny_x):
    user = tiny.add_hook("layer2.post", lambda a, hook: a * 3)
    try:
        with torch.no_grad():
            _, cache = tiny.run_with_cache(tiny_x, names_filter=["layer2.post", "layer3.pre"])
        expected = tiny_seq[2](tiny_seq[1](tiny_seq[0](tiny_x))) * 3
        assert torch.equal(cache["layer2.post"], expected)
        assert torch.equal(cache["layer3.pre"], expected)
        assert tiny.attached_hooks() == [user]
    finally:
        user.remove()


def test_run_with_cache_leaves_no_hooks_even_on_error(tiny, tiny_x):
    tiny.run_with_cache(tiny_x)
    assert tiny.attached_hooks() == []
    with pytest.raises(ShapeError):
        tiny.run_with_cache(torch.zeros(5, 15))
    assert tiny.attached_hooks() == []


# -- names_filter ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names_filter,expected",
    [
        ("layer2.post", ["layer2.post"]),
        (["layer3.post", "layer0.pre"], ["layer0.pre", "layer3.post"]),
        ("*.post", [f"layer{i}.post" for i in range(5)]),
        ("layer1.*", ["layer1.pre", "layer1.post"]),
        (lambda name: name.endswith(".pre") and name != "layer0.pre", [f"layer{i}.pre" for i in range(1, 5)]),
        (None, NAMES),
    ],
)
def test_names_filter(tiny, tiny_seq, tiny_x, names_filter, expected):
    acts, _ = reference(tiny_seq, tiny_x)
    out, cache = tiny.run_with_cache(tiny_x, names_filter=names_filter)
    assert list(cache) == expected
    for name in expected:
        assert torch.equal(cache[name], acts[name])
    assert torch.equal(out, tiny_seq(tiny_x))


@pytest.mark.parametrize(
    "names_filter,message",
    [
        ("layer0.pst", "unknown hook 'layer0.pst'; did you mean 'layer0.post'? (valid: layer0.pre, layer0.post, "),
        ("*.pst", "pattern '*.pst' matched no hook point; did you mean 'layer4.post'? (valid: layer0.pre, "),
        (["layer1.post", "layer7.pre"], "unknown hook 'layer7.pre'; did you mean "),
        ("hook_resid_pre", "unknown hook 'hook_resid_pre' (valid: layer0.pre, "),
    ],
)
def test_names_filter_matching_nothing(tiny, tiny_x, names_filter, message):
    with pytest.raises(HookNameError, match=re.escape(message)):
        tiny.run_with_cache(tiny_x, names_filter=names_filter)
    assert tiny.attached_hooks() == []


def test_callable_filter_matching_nothing(tiny, tiny_x):
    def never(name):
        return False

    with pytest.raises(
        HookNameError,
        match=re.escape(
            "names filter 'never' matched no hook point; hook names are: layer0.pre, layer0.post, layer1.pre"
        ),
    ):
        tiny.run_with_cache(tiny_x, names_filter=never)


def test_device_cpu(tiny, tiny_x):
    out, cache = tiny.run_with_cache(tiny_x, device="cpu")
    assert all(t.device == torch.device("cpu") for t in cache.values())
    _, cache2 = tiny.run_with_cache(tiny_x, device=torch.device("cpu"), incl_bwd=True)
    assert all(t.device == torch.device("cpu") for t in cache2.values())
    for name in NAMES:
        assert torch.equal(cache[name], cache2[name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_cpu_from_cuda_model(tiny_seq, tiny_x):
    m = HookedMLP.from_sequential(tiny_seq.cuda())
    out, cache = m.run_with_cache(tiny_x.cuda(), device="cpu", incl_bwd=True)
    assert out.device.type == "cuda"
    assert {t.device.type for t in cache.values()} == {"cpu"}
    _, on_gpu = m.run_with_cache(tiny_x.cuda())
    for name in NAMES:
        assert torch.equal(cache[name], on_gpu[name].cpu())


# -- gradients -----------------------------------------------------------------------------


def test_incl_bwd_gradients_equal_autograd(tiny, tiny_seq, tiny_x):
    acts, grads = reference(tiny_seq, tiny_x)
    out, cache = tiny.run_with_cache(tiny_x, incl_bwd=True)
    assert sorted(cache) == sorted(NAMES + [n + "_grad" for n in NAMES])
    for name in NAMES:
        assert torch.equal(cache[name], acts[name]), name
        assert torch.equal(cache[name + "_grad"], grads[name]), name
        assert not cache[name + "_grad"].requires_grad
    # logits.sum(): the gradient at the logits is all ones
    assert torch.equal(cache["layer4.post_grad"], torch.ones(5, 3))
    assert not out.requires_grad
    assert torch.equal(out, tiny_seq(tiny_x).detach())
    assert all(p.grad is None for p in tiny.parameters())
    assert all(p.grad is None for p in tiny_seq.parameters())


def test_incl_bwd_with_filter_and_loss_fn(tiny, tiny_seq, tiny_x):
    leaf = tiny_x.clone().requires_grad_(True)
    h0 = tiny_seq[0](leaf)
    h2 = tiny_seq[2](tiny_seq[1](h0))
    logits = tiny_seq[4](tiny_seq[3](h2))
    loss = logits.log_softmax(-1)[:, 1].mean()
    g0, g2 = torch.autograd.grad(loss, [h0, h2])
    _, cache = tiny.run_with_cache(
        tiny_x,
        names_filter=["layer0.post", "layer2.post"],
        incl_bwd=True,
        loss_fn=lambda out: out.log_softmax(-1)[:, 1].mean(),
    )
    assert list(cache) == ["layer0.post", "layer2.post", "layer0.post_grad", "layer2.post_grad"]
    assert torch.equal(cache["layer0.post_grad"], g0)
    assert torch.equal(cache["layer2.post_grad"], g2)
    assert all(p.grad is None for p in tiny.parameters())


def test_incl_bwd_under_no_grad(tiny, tiny_seq, tiny_x):
    _, grads = reference(tiny_seq, tiny_x)
    with torch.no_grad():
        _, cache = tiny.run_with_cache(tiny_x, incl_bwd=True, names_filter="layer0.pre")
    assert torch.equal(cache["layer0.pre_grad"], grads["layer0.pre"])


def test_incl_bwd_with_stop_at(tiny, tiny_seq, tiny_x):
    leaf = tiny_x.clone().requires_grad_(True)
    h0 = tiny_seq[0](leaf)
    mid = tiny_seq[2](tiny_seq[1](h0))
    (g,) = torch.autograd.grad(mid.sum(), [h0])
    out, cache = tiny.run_with_cache(tiny_x, stop_at="layer2.post", incl_bwd=True, names_filter="layer0.post")
    assert torch.equal(out, mid.detach())
    assert torch.equal(cache["layer0.post_grad"], g)


def test_incl_bwd_existing_param_grads_untouched(tiny, tiny_x):
    tiny(tiny_x).sum().backward()
    before = [p.grad.clone() for p in tiny.parameters()]
    tiny.run_with_cache(tiny_x, incl_bwd=True)
    assert all(torch.equal(p.grad, b) for p, b in zip(tiny.parameters(), before))


def test_run_with_cache_in_no_grad_and_inference_mode(tiny, tiny_seq, tiny_x):
    acts, _ = reference(tiny_seq, tiny_x)
    with torch.no_grad():
        _, c1 = tiny.run_with_cache(tiny_x)
    with torch.inference_mode():
        _, c2 = tiny.run_with_cache(tiny_x)
    for name in NAMES:
        assert torch.equal(c1[name], acts[name]) and torch.equal(c2[name], acts[name])


def test_default_model_cache(tiny_x):
    torch.manual_seed(0)
    m = HookedMLP()
    seq = list(m.to_sequential())[1:]
    x = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(2))
    acts, grads = reference(nn.Sequential(*seq), x)
    out, cache = m.run_with_cache(x, incl_bwd=True)
    for name in NAMES:
        assert torch.equal(cache[name], acts[name]), name
        assert torch.equal(cache[name + "_grad"], grads[name]), name
    assert cache["layer0.post"].shape == (3, 512) and cache["layer4.post"].shape == (3, 10)


# -- ActivationCache -------------------------------------------------------------------------


@pytest.fixture
def cache():
    return ActivationCache(
        {
            "layer0.pre": torch.arange(6.0).reshape(2, 3),
            "layer0.post": torch.ones(2, 3),
            "layer1.post": torch.zeros(2, 5),
        }
    )


def test_mapping_behaviour(cache):
    assert len(cache) == 3
    assert list(cache) == ["layer0.pre", "layer0.post", "layer1.post"]
    assert "layer0.post" in cache and "layer9.post" not in cache
    assert cache.get("nope") is None
    assert torch.equal(cache["layer0.pre"], torch.arange(6.0).reshape(2, 3))
    assert dict(cache).keys() == {"layer0.pre", "layer0.post", "layer1.post"}
    assert cache.has_batch_dim


def test_unknown_key(cache):
    with pytest.raises(
        HookNameError,
        match=re.escape(
            "no activation cached for 'layer0.pots'; did you mean 'layer0.post'? (valid: layer0.pre, layer0.post, "
            "layer1.post)"
        ),
    ) as info:
        cache["layer0.pots"]
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("no activation cached")


def test_read_only(cache):
    with pytest.raises(ValueError, match=re.escape("ActivationCache is read-only; copy it with dict(cache) to edit")):
        cache["x"] = torch.zeros(1)
    with pytest.raises(ValueError, match="read-only"):
        del cache["layer0.pre"]
    assert len(cache) == 3


def test_constructor_keeps_a_dict_and_copies_other_mappings():
    # TransformerLens: cache_dict is the dict given (the caching hooks keep writing into it)
    src = {"a": torch.zeros(1)}
    c = ActivationCache(src)
    assert c.cache_dict is src
    src["b"] = torch.zeros(1)
    assert list(c) == ["a", "b"]
    frozen = ActivationCache(c)  # not a dict: copied
    src["c"] = torch.zeros(1)
    assert list(frozen) == ["a", "b"]


def test_to_moves_in_place_and_returns_the_cache(cache):
    before = {k: v for k, v in cache.items()}
    moved = cache.to("cpu")
    assert moved is cache and list(moved) == list(before)
    assert all(torch.equal(moved[k], before[k]) for k in before)
    d = ActivationCache({"a": torch.zeros(1, 2)}, has_batch_dim=False).to(torch.device("cpu"))
    assert d["a"].device == torch.device("cpu") and d.has_batch_dim is False


def test_stack(cache):
    s = cache.stack(["layer0.pre", "layer0.post"])
    assert torch.equal(s, torch.stack([torch.arange(6.0).reshape(2, 3), torch.ones(2, 3)]))
    with pytest.raises(
        ShapeError,
        match=re.escape(
            "stack() needs activations of one shape; got layer0.pre: [2, 3], layer0.post: [2, 3], layer1.post: [2, 5]. "
            "Pass names of equal shape"
        ),
    ):
        cache.stack()
    with pytest.raises(ShapeError, match=re.escape("stack() needs at least one name; got none")):
        cache.stack([])
    with pytest.raises(HookNameError, match="no activation cached for 'layer5.post'"):
        cache.stack(["layer0.pre", "layer5.post"])


def test_stack_of_model_cache(tiny, tiny_x):
    _, c = tiny.run_with_cache(tiny_x, names_filter="*.post")
    s = c.stack(["layer0.post", "layer1.post", "layer2.post"])
    assert s.shape == (3, 5, 8)
    assert torch.equal(s[1], c["layer1.post"])


def test_remove_batch_dim(tiny, tiny_x, caplog):
    _, c = tiny.run_with_cache(tiny_x[:1])
    first = {k: v for k, v in c.items()}
    single = c.remove_batch_dim()
    assert single is c and not c.has_batch_dim  # in place, returning the cache (TransformerLens)
    assert c["layer0.post"].shape == (8,)
    assert all(torch.equal(c[k], first[k][0]) for k in first)
    assert c["layer0.post"] is c["layer1.pre"]  # still one tensor
    with caplog.at_level("WARNING", logger="hookedmlp"):
        assert c.remove_batch_dim() is c  # a second call only logs, as in TransformerLens
    assert "Tried removing batch dimension after already having removed it." in caplog.text
    assert c["layer0.post"].shape == (8,)
    _, c5 = tiny.run_with_cache(tiny_x)
    with pytest.raises(
        AssertionError,
        match=re.escape("Cannot remove batch dimension from cache with batch size 5; cache a single input"),
    ):
        c5.remove_batch_dim()
    assert c5.has_batch_dim and c5["layer0.post"].shape == (5, 8)


def test_repr(cache):
    assert repr(ActivationCache({})) == "ActivationCache({})"
    assert repr(cache) == (
        "ActivationCache(\n"
        "  layer0.pre   [2, 3] float32 cpu\n"
        "  layer0.post  [2, 3] float32 cpu\n"
        "  layer1.post  [2, 5] float32 cpu\n"
        ")"
    )
