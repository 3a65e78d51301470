"""TransformerLens 4.3.0 parity for caching: run_with_cache's keywords, the caching hooks,
ActivationCache, cfg and stop_at_layer / start_at_layer, checked on our layout against plain
torch; each deliberate difference is asserted as such (``DIFFERENCE:``).

The hook side is in tests/test_tl_parity.py; docs/transformerlens.md has the table of names.
"""

import logging
import re

import numpy as np
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
    # a string that is not a cached name goes through the model's act_name, as TransformerLens' get_act_name;
    # a HookedMLP's takes only (name, layer), so "post" stays a name
    with pytest.raises(HookNameError, match=re.escape("no activation cached for 'post'")):
        cache["post"]


def test_string_and_tuple_keys_on_a_transformerlens_style_root():
    from tinylens import TinyLens

    torch.manual_seed(0)
    model = TinyLens(n_layers=2)
    _, cache = model.run_with_cache(torch.rand(3, 6))
    assert cache["embed"] is cache["hook_embed"] and cache["k1"] is cache["blocks.1.attn.hook_k"]
    assert (
        cache["pre", -1] is cache["blocks.1.mlp.hook_pre"]
        and cache["resid_post", 0] is cache["blocks.0.hook_resid_post"]
    )
    assert (
        cache["scale"] is cache["ln_final.hook_scale"]
        and cache["normalized", 0, "ln2"] is cache["blocks.0.ln2.hook_normalized"]
    )
    with pytest.raises(
        HookNameError, match=re.escape("no activation cached for 'blocks.0.hook_mlp_in': it is a hook point")
    ):
        cache["mlp_in", 0]  # an optional hook point that is off: it never ran
    with pytest.raises(HookNameError, match=re.escape("no activation cached for 'post' (read as 'mlp.hook_post')")):
        cache["post"]  # a shorthand without its layer


def test_stack_activation(tiny, tiny_x):
    _, cache = tiny.run_with_cache(tiny_x)
    stacked = cache.stack_activation("post", layer=4)
    assert stacked.shape == (4, 5, 8)
    assert torch.equal(stacked, torch.stack([cache[f"layer{i}.post"] for i in range(4)]))
    assert torch.equal(cache.stack_activation("pre", 1), cache["layer0.pre"].unsqueeze(0))
    # the default is every layer: here the logits are narrower than the hidden layers
    with pytest.raises(ShapeError, match=re.escape("layer3.post: [5, 8], layer4.post: [5, 3]")):
        cache.stack_activation("post")
    for layer in (0, -2, 6):  # TransformerLens: an empty stack's RuntimeError, or the cache's KeyError
        with pytest.raises(IndexError, match=re.escape("layer must be 1 to 5 (the layers before it), or -1 or None")):
            cache.stack_activation("post", layer)
    with pytest.raises(UsageError, match="stack_activation needs the cache's model and its n_layers"):
        ActivationCache(dict(cache)).stack_activation("post")


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


class Slice:
    """Duck-typed TransformerLens ``Slice``: its ``slice`` (what to index with) and ``mode``."""

    def __init__(self, s, mode):
        self.slice, self.mode = s, mode


@pytest.mark.parametrize(
    "batch_slice,rows,keeps_batch",
    [
        (1, 1, False),
        (np.int64(3), 3, False),
        (torch.tensor(2), 2, False),
        ((3,), slice(3), True),  # TransformerLens' Slice input: a tuple is slice(*tuple)
        ((1, 4), slice(1, 4), True),
        ((0, 5, 2), slice(0, 5, 2), True),
        (slice(2, None), slice(2, None), True),
        ([0, 3], [0, 3], True),
        (torch.tensor([4, 1]), [4, 1], True),
        (np.array([2]), [2], True),
        (None, slice(None), True),
        (Slice(slice(1, 3), "slice"), slice(1, 3), True),
        (Slice(0, "int"), 0, False),
    ],
)
def test_apply_slice_to_batch_dim(tiny, tiny_x, batch_slice, rows, keeps_batch):
    _, cache = tiny.run_with_cache(tiny_x)
    sliced = cache.apply_slice_to_batch_dim(batch_slice)
    assert sliced.has_batch_dim is keeps_batch and sliced.model is tiny and list(sliced) == list(cache)
    assert all(torch.equal(sliced[k], cache[k][rows]) for k in cache)


def test_apply_slice_to_batch_dim_keeps_broadcast_entries_and_checks_its_input(tiny, tiny_x):
    bias = torch.ones(1, 3)  # an entry of batch 1 beside a batch of 5: not batched, kept whole (as TransformerLens)
    cache = ActivationCache({"a": tiny_x, "b": tiny_x * 2, "bias": bias}, tiny)
    sliced = cache.apply_slice_to_batch_dim((1, 3))
    assert torch.equal(sliced["a"], tiny_x[1:3]) and sliced["bias"] is bias
    row = cache.apply_slice_to_batch_dim(1)
    with pytest.raises(AssertionError, match=re.escape("Cannot index into a cache without a batch dim")):
        row.apply_slice_to_batch_dim(0)  # a BatchDimError, an AssertionError as in TransformerLens
    with pytest.raises(TypeError, match=re.escape("batch_slice must be an int, a tuple (start, stop[, step])")):
        cache.apply_slice_to_batch_dim("0:2")


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
