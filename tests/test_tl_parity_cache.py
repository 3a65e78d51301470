"""TransformerLens 4.3.0 parity for caching: run_with_cache's keywords, the caching hooks,
ActivationCache, cfg and stop_at_layer / start_at_layer, checked on our layout against plain
torch; each deliberate difference is asserted as such (``DIFFERENCE:``).

The hook side is in tests/test_tl_parity.py; docs/transformerlens.md has the table of names.
"""

import logging
import re

import pytest
import torch

from hookedmlp import ActivationCache, HookNameError, HookPoint, ShapeError, UsageError


def chain(seq, x, upto=None):
    for m in list(seq)[:upto]:
        x = m(x)
    return x


# -- run_with_cache' keywords -----------------------------------------------------------------------


def test_remove_batch_dim_equals_plain_torch_on_one_example(tiny, tiny_seq, tiny_x):
    _, grads = tiny.run_with_cache(tiny_x[:1], remove_batch_dim=True, incl_bwd=True, names_filter="layer4.post")
    assert torch.equal(grads["layer4.post_grad"], torch.ones(3))
    out, cache = tiny.run_with_cache(tiny_x[:1], remove_batch_dim=True)
    assert not cache.has_batch_dim
    assert torch.equal(cache["layer0.pre"], tiny_x[0])
    for i in range(5):
        assert torch.equal(cache[f"layer{i}.post"], chain(tiny_seq, tiny_x[:1], i + 1)[0].detach())
    assert out.shape == (1, 3)  # the output keeps its batch dimension
    with pytest.raises(AssertionError, match=re.escape("Cannot remove batch dimension from cache with batch size 5")):
        tiny.run_with_cache(tiny_x, remove_batch_dim=True)
    assert tiny.attached_hooks() == []


def test_return_cache_object_false_gives_the_plain_dict(tiny, tiny_x):
    _, as_dict = tiny.run_with_cache(tiny_x, return_cache_object=False)
    _, cache = tiny.run_with_cache(tiny_x)
    assert type(as_dict) is dict and list(as_dict) == list(cache)
    assert all(torch.equal(as_dict[k], cache[k]) for k in cache)


def test_run_with_cache_reset_hooks_end_false_keeps_recording(tiny, tiny_seq, tiny_x):
    # As in TransformerLens: the caching hooks stay and later passes write into the same cache.
    _, cache = tiny.run_with_cache(tiny_x, names_filter="layer1.post", reset_hooks_end=False)
    assert len(tiny.attached_hooks()) == 1
    other = tiny_x.flip(0)
    with torch.no_grad():
        tiny(other)
    assert torch.equal(cache["layer1.post"], chain(tiny_seq, other, 2))
    tiny.reset_hooks()
    assert tiny.attached_hooks() == [] and not tiny.is_caching


def test_incl_bwd_gradients_equal_autograd_and_leave_param_grads(tiny, tiny_seq, tiny_x):
    leaf = tiny_x.clone().requires_grad_(True)
    h1 = chain(tiny_seq, leaf, 2)
    (g1,) = torch.autograd.grad(chain(tiny_seq[2:], h1).sum(), [h1])
    _, cache = tiny.run_with_cache(tiny_x, incl_bwd=True, names_filter="layer1.post")
    assert torch.equal(cache["layer1.post_grad"], g1)
    # DIFFERENCE: TransformerLens calls output.backward() (a scalar output only) and fills .grad
    assert all(p.grad is None for p in tiny.parameters())


def test_incl_bwd_with_a_non_scalar_loss_is_a_clear_usage_error(tiny, tiny_x):
    with pytest.raises(
        UsageError,
        match=re.escape("incl_bwd needs a scalar loss, but loss_fn returned [5, 3]; reduce it, e.g. with .mean()"),
    ):
        tiny.run_with_cache(tiny_x, incl_bwd=True, loss_fn=lambda out: out * 2)
    with pytest.raises(UsageError, match=re.escape("loss_fn returned str")):
        tiny.run_with_cache(tiny_x, incl_bwd=True, loss_fn=lambda out: "loss")
    with pytest.raises(UsageError, match=re.escape("loss_fn is used only with incl_bwd=True")):
        tiny.run_with_cache(tiny_x, loss_fn=lambda out: out.sum())
    assert tiny.attached_hooks() == []


def test_caching_hooks_record_every_pass_and_remove_batch_dim(tiny, tiny_seq, tiny_x):
    store, fwd, bwd = tiny.get_caching_hooks(["layer0.post", "layer2.post"], incl_bwd=True, remove_batch_dim=True)
    assert [n for n, _ in fwd] == ["layer0.post", "layer2.post"] and [n for n, _ in bwd] == [
        "layer0.post",
        "layer2.post",
    ]
    assert tiny.is_caching
    with tiny.hooks(fwd, bwd):
        tiny(tiny_x[:1]).sum().backward()
    assert store["layer0.post"].shape == (8,) and store["layer0.post_grad"].shape == (8,)
    assert torch.equal(store["layer2.post"], chain(tiny_seq, tiny_x[:1], 3)[0].detach())
    store2 = tiny.add_caching_hooks("layer0.post")
    with torch.no_grad():
        tiny(tiny_x)
    assert torch.equal(store2["layer0.post"], tiny_seq[0](tiny_x))  # a batch of 5 keeps its dimension
    tiny.reset_hooks()
    assert tiny.attached_hooks() == []


# -- ActivationCache ------------------------------------------------------------------------------


def test_cache_dict_keys_values_items(tiny, tiny_x):
    _, cache = tiny.run_with_cache(tiny_x)
    assert isinstance(cache.cache_dict, dict)
    assert list(cache.keys()) == list(cache.cache_dict.keys()) == tiny.hook_names
    assert all(a is b for a, b in zip(cache.values(), cache.cache_dict.values()))
    assert [k for k, _ in cache.items()] == list(cache) and len(cache) == 10


def test_tuple_keys_and_negative_layers(tiny, tiny_x):
    _, cache = tiny.run_with_cache(tiny_x)
    assert cache["post", 0] is cache["layer0.post"]
    assert cache[("pre", 3)] is cache["layer3.pre"]
    assert cache["post", -1] is cache["layer4.post"] and cache["pre", -5] is cache["layer0.pre"]
    assert cache["post", 2, None] is cache["layer2.post"]  # TransformerLens' (name, layer, sublayer_type)
    with pytest.raises(HookNameError, match=re.escape("tuple keys of a HookedMLP are ('pre' or 'post', layer)")):
        cache["resid_pre", 0]
    # DIFFERENCE: TransformerLens' bare strings go through get_act_name; ours must be hook names
    with pytest.raises(HookNameError, match=re.escape("no activation cached for 'post'")):
        cache["post"]


def test_stack_activation(tiny, tiny_x):
    _, cache = tiny.run_with_cache(tiny_x)
    stacked = cache.stack_activation("post", layer=4)
    assert stacked.shape == (4, 5, 8)
    assert torch.equal(stacked, torch.stack([cache[f"layer{i}.post"] for i in range(4)]))
    assert torch.equal(cache.stack_activation("pre", 1), cache["layer0.pre"].unsqueeze(0))
    # the default is every layer: here the logits are narrower than the hidden layers
    with pytest.raises(ShapeError, match=re.escape("layer3.post: [5, 8], layer4.post: [5, 3]")):
        cache.stack_activation("post")


def test_toggle_autodiff_sets_the_global_grad_mode_and_logs(caplog):
    cache = ActivationCache({})
    try:
        with caplog.at_level(logging.WARNING, logger="hookedmlp"):
            cache.toggle_autodiff(False)
        assert not torch.is_grad_enabled()
        assert "Changed the global state, set autodiff to False" in caplog.text
        cache.toggle_autodiff(True)
        assert torch.is_grad_enabled()
    finally:
        torch.set_grad_enabled(True)


def test_apply_slice_to_batch_dim(tiny, tiny_x):
    _, cache = tiny.run_with_cache(tiny_x)
    row = cache.apply_slice_to_batch_dim(1)
    assert not row.has_batch_dim and torch.equal(row["layer2.post"], cache["layer2.post"][1])
    some = cache.apply_slice_to_batch_dim([0, 3])
    assert some.has_batch_dim and torch.equal(some["layer0.pre"], tiny_x[[0, 3]])
    # DIFFERENCE: TransformerLens asserts; we raise a UsageError (a ValueError)
    with pytest.raises(UsageError, match="batch dimension was removed"):
        row.apply_slice_to_batch_dim(0)


# -- cfg, hook_points(), stop_at_layer / start_at_layer -----------------------------------------------------


def test_cfg_and_hook_points(tiny):
    cfg = tiny.cfg
    assert (cfg.n_layers, cfg.d_in, cfg.d_out) == (5, 16, 3)
    assert cfg.device == torch.device("cpu") and cfg.dtype == torch.float32
    points = tiny.hook_points()
    assert all(isinstance(p, HookPoint) for p in points)
    assert [p.name for p in points] == tiny.hook_names == list(tiny.hook_dict)


@pytest.mark.parametrize("layer", [0, 1, 2, 4, 5, -1, -4])
def test_stop_at_layer_equals_the_first_modules(tiny, tiny_seq, tiny_x, layer):
    with torch.no_grad():
        assert torch.equal(
            tiny(tiny_x, stop_at_layer=layer), chain(tiny_seq, tiny_x, layer % 5 if layer < 0 else layer)
        )


def test_stop_at_layer_runs_only_the_hooks_before_it(tiny, tiny_x):
    fired = []
    tiny.run_with_hooks(tiny_x, stop_at_layer=2, fwd_hooks=[("*", lambda a, hook: fired.append(hook.name))])
    assert fired == ["layer0.pre", "layer0.post", "layer1.pre", "layer1.post"]  # not layer2.pre: module 2's own
    _, cache = tiny.run_with_cache(tiny_x, stop_at_layer=2)
    assert list(cache) == fired


def test_start_at_layer_resumes_and_runs_that_layers_hooks(tiny, tiny_seq, tiny_x):
    with torch.no_grad():
        mid = tiny(tiny_x, stop_at_layer=3)
        assert torch.equal(tiny(mid, start_at_layer=3), tiny_seq(tiny_x))
        out = tiny.run_with_hooks(mid, start_at_layer=3, fwd_hooks=[("layer3.pre", lambda a, hook: a * 0)])
        assert torch.equal(out, tiny_seq[4](tiny_seq[3](torch.zeros(5, 8))))
        assert torch.equal(tiny(mid, start_at_layer=3, stop_at_layer=4), tiny_seq[3](mid))
    with pytest.raises(ShapeError, match=re.escape("start_at_layer=3 expects the activation at 'layer2.post'")):
        tiny(tiny_x, start_at_layer=3)


def test_remove_batch_dim_with_reset_hooks_end_false_keeps_recording_into_the_cache(tiny, tiny_seq, tiny_x):
    _, cache = tiny.run_with_cache(tiny_x[:1], names_filter="layer0.post", remove_batch_dim=True, reset_hooks_end=False)
    with torch.no_grad():
        tiny(tiny_x[1:2])
    assert torch.equal(cache["layer0.post"], tiny_seq[0](tiny_x[1])) and not cache.has_batch_dim  # a later pass
    tiny.reset_hooks()
