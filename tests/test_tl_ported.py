"""TransformerLens' own tests of hook points, hooks and the activation cache, ported to hookedmlp.

Source: TransformerLensOrg/TransformerLens (the tests as of the 4.x line; hookedmlp follows the
4.3.0 release). Every test of these files that concerns the hook surface and the cache is here,
under its own name, with its assertions as written; what had to change says so in a comment:

- tests/unit/test_hook_points.py (30 tests)
- tests/unit/test_hook_introspection.py (12)
- tests/unit/test_hooked_root_module.py (6)
- tests/integration/test_hooks.py (14; run on two models, see below)
- tests/acceptance/test_activation_cache.py: the 9 tests of the cache itself (remove_batch_dim,
  keys, values, items, tuple and shorthand keys, apply_slice_to_batch_dim, toggle_autodiff,
  stack_activation)
- tests/integration/test_cache_hook_names.py (1)

Where a test loads a transformer (``solu-1l``, ``solu-2l``), it runs on ``TinyLens``
(tests/tinylens.py): the same hook names and layout on a small residual network over vectors,
so a prompt becomes a batch of one vector and a TransformerLens shape ``[batch, pos, ...]``
becomes ``[batch, ...]``. The tests of tests/integration/test_hooks.py also run on a HookedMLP,
with its first hook point as ``hook_embed`` and its last hidden activation as the residual stream.

TransformerLens' unit tests patch ``torch.utils.hooks.RemovableHandle``, because its HookPoint
registers PyTorch module hooks; hookedmlp's runs its hooks itself, so the patch is left out.
hookedmlp's suite fails a test that leaves a hook attached, so tests that leave hooks on a
HookPoint of their own remove them at the end (marked ``# cleanup``).

Not ported, as transformer analysis rather than hooks or the cache: the other 33 tests of
tests/acceptance/test_activation_cache.py (logit attribution, accumulated_resid,
decompose_resid, stack_head_results, stack_neuron_results, get_full_resid_decomposition,
get_neuron_results, compute_head_results and their projections), which need attention heads,
layer norms with weights and an unembedding, and the two tests of
tests/integration/test_cache_pos_slice.py (``pos_slice`` slices a position axis, which
hookedmlp's networks do not have; ``run_with_cache`` refuses the keyword).
"""

import warnings
from typing import Any
from unittest import mock

import pytest
import torch
from tinylens import TinyLens

from hookedmlp import HookedMLP, HookedRoot, HookPoint
from hookedmlp.hooks.conversion import BaseTensorConversion
from hookedmlp.hooks.introspection import HookIntrospectionMixin
from hookedmlp.hooks.names import get_act_name

# ======================================================================================
# tests/unit/test_hook_points.py
# ======================================================================================


def setup_hook_point_and_hook():
    hook_point = HookPoint()

    def hook(activation, hook):
        return activation

    return hook_point, hook


def test_add_hook_forward():
    hook_point, hook = setup_hook_point_and_hook()
    hook_point.add_hook(hook, dir="fwd")
    assert len(hook_point.fwd_hooks) == 1
    hook_point.remove_hooks("both", including_permanent=True)  # cleanup


def test_add_hook_backward():
    hook_point, hook = setup_hook_point_and_hook()
    hook_point.add_hook(hook, dir="bwd")
    assert len(hook_point.bwd_hooks) == 1
    hook_point.remove_hooks("both", including_permanent=True)  # cleanup


def test_add_hook_permanent():
    hook_point, hook = setup_hook_point_and_hook()
    hook_point.add_hook(hook, dir="fwd", is_permanent=True)
    assert hook_point.fwd_hooks[0].is_permanent
    hook_point.remove_hooks("both", including_permanent=True)  # cleanup


def test_add_hook_with_level():
    hook_point, hook = setup_hook_point_and_hook()
    hook_point.add_hook(hook, dir="fwd", level=5)
    assert hook_point.fwd_hooks[0].context_level == 5
    hook_point.remove_hooks("both", including_permanent=True)  # cleanup


def test_add_hook_prepend():
    # ADAPTED: TransformerLens mocks its LensHandle and HookPoint.register_forward_hook so that the
    # two PyTorch handles get ids 1 and 2. hookedmlp's handles number themselves as PyTorch's do
    # (``handle.hook.id``, counting up), so the same assertions read the ids the two calls returned.
    hook_point, _ = setup_hook_point_and_hook()

    def hook1(activation, hook):
        return activation

    def hook2(activation, hook):
        return activation

    first = hook_point.add_hook(hook1, dir="fwd")
    second = hook_point.add_hook(hook2, dir="fwd", prepend=True)
    assert second.hook.id == first.hook.id + 1  # the mock's 1 and 2

    assert len(hook_point.fwd_hooks) == 2
    assert hook_point.fwd_hooks[0].hook.id == second.hook.id
    assert hook_point.fwd_hooks[1].hook.id == first.hook.id
    hook_point.remove_hooks("both", including_permanent=True)  # cleanup


def test_enable_reshape():
    """Test that enable_reshape sets the hook conversion correctly."""

    class TestHookConversion(BaseTensorConversion):
        def handle_conversion(self, input_value, *full_context):
            return input_value * 2

        def revert(self, input_value, *full_context):
            return input_value + 1

    hook_point = HookPoint()
    conversion = TestHookConversion()

    hook_point.enable_reshape(conversion)

    assert hook_point.hook_conversion is conversion


def test_enable_reshape_with_none():
    """Test that enable_reshape works with None values."""
    hook_point = HookPoint()

    hook_point.enable_reshape(None)

    assert hook_point.hook_conversion is None


def test_reshape_functionality_integration():
    """Test that hook conversion works in an integration context."""

    class TestHookConversion(BaseTensorConversion):
        def handle_conversion(self, input_value, *full_context):
            return input_value * 2  # Double the input

        def revert(self, input_value, *full_context):
            return input_value + 10  # Add 10 to the output

    class TestModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hook_point = HookPoint()

        def forward(self, x):
            return self.hook_point(x)

    module = TestModule()
    conversion = TestHookConversion()
    module.hook_point.enable_reshape(conversion)

    def test_hook(activation, hook):
        return activation + 1  # Add 1 to each element

    module.hook_point.add_hook(test_hook, dir="fwd")

    test_input = torch.tensor([1.0, 2.0, 3.0])
    result = module(test_input)

    # 1. conversion.convert(): [1,2,3] * 2 = [2,4,6]; 2. hook: + 1 = [3,5,7]; 3. revert: + 10
    expected = torch.tensor([13.0, 15.0, 17.0])
    assert torch.equal(result, expected)
    module.hook_point.remove_hooks("both", including_permanent=True)  # cleanup


def test_reshape_functionality_hook_returns_none_integration():
    """Test that output revert is not applied when hook returns None."""

    class TestHookConversion(BaseTensorConversion):
        def handle_conversion(self, input_value, *full_context):
            return input_value * 2

        def revert(self, input_value, *full_context):
            return input_value + 10

    class TestModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hook_point = HookPoint()

        def forward(self, x):
            return self.hook_point(x)

    module = TestModule()
    conversion = TestHookConversion()
    module.hook_point.enable_reshape(conversion)

    def test_hook(activation, hook):
        return None

    module.hook_point.add_hook(test_hook, dir="fwd")

    test_input = torch.tensor([1.0, 2.0, 3.0])
    result = module(test_input)

    # Since hook returns None, the original input should be returned
    assert torch.equal(result, test_input)
    module.hook_point.remove_hooks("both", including_permanent=True)  # cleanup


class TestHookPointHasHooks:
    """Comprehensive test suite for HookPoint.has_hooks method."""

    def setup_method(self):
        self.hook_point = HookPoint()

        def sample_hook(activation, hook):
            return activation

        self.sample_hook = sample_hook

    def teardown_method(self):
        self.hook_point.remove_hooks("both", including_permanent=True)  # cleanup

    def test_no_hooks_returns_false(self):
        assert not self.hook_point.has_hooks()
        assert not self.hook_point.has_hooks(dir="fwd")
        assert not self.hook_point.has_hooks(dir="bwd")
        assert not self.hook_point.has_hooks(dir="both")

    def test_forward_hook_detection(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd")
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(dir="fwd")
        assert self.hook_point.has_hooks(dir="both")
        assert not self.hook_point.has_hooks(dir="bwd")

    def test_backward_hook_detection(self):
        self.hook_point.add_hook(self.sample_hook, dir="bwd")
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(dir="bwd")
        assert self.hook_point.has_hooks(dir="both")
        assert not self.hook_point.has_hooks(dir="fwd")

    def test_both_direction_hooks(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd")
        self.hook_point.add_hook(self.sample_hook, dir="bwd")
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(dir="fwd")
        assert self.hook_point.has_hooks(dir="bwd")
        assert self.hook_point.has_hooks(dir="both")

    def test_permanent_hook_detection(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=True)
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(including_permanent=True)
        assert not self.hook_point.has_hooks(including_permanent=False)

    def test_non_permanent_hook_detection(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=False)
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(including_permanent=True)
        assert self.hook_point.has_hooks(including_permanent=False)

    def test_mixed_permanent_hooks(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=True)
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=False)
        assert self.hook_point.has_hooks(including_permanent=True)
        assert self.hook_point.has_hooks(including_permanent=False)

    def test_only_permanent_hooks(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=True)
        self.hook_point.add_hook(self.sample_hook, dir="bwd", is_permanent=True)
        assert self.hook_point.has_hooks(including_permanent=True)
        assert self.hook_point.has_hooks(dir="fwd", including_permanent=True)
        assert self.hook_point.has_hooks(dir="bwd", including_permanent=True)
        assert not self.hook_point.has_hooks(including_permanent=False)
        assert not self.hook_point.has_hooks(dir="fwd", including_permanent=False)
        assert not self.hook_point.has_hooks(dir="bwd", including_permanent=False)

    def test_context_level_filtering(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=0)
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=1)
        self.hook_point.add_hook(self.sample_hook, dir="bwd", level=2)
        assert self.hook_point.has_hooks(level=0)
        assert self.hook_point.has_hooks(level=1)
        assert self.hook_point.has_hooks(level=2)
        assert not self.hook_point.has_hooks(level=3)
        assert not self.hook_point.has_hooks(level=-1)
        assert self.hook_point.has_hooks(level=None)

    def test_context_level_with_direction(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=0)
        self.hook_point.add_hook(self.sample_hook, dir="bwd", level=1)
        assert self.hook_point.has_hooks(dir="fwd", level=0)
        assert self.hook_point.has_hooks(dir="bwd", level=1)
        assert not self.hook_point.has_hooks(dir="fwd", level=1)
        assert not self.hook_point.has_hooks(dir="bwd", level=0)

    def test_context_level_with_permanent_flags(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=0, is_permanent=True)
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=1, is_permanent=False)
        assert self.hook_point.has_hooks(level=0, including_permanent=True)
        assert not self.hook_point.has_hooks(level=0, including_permanent=False)
        assert self.hook_point.has_hooks(level=1, including_permanent=True)
        assert self.hook_point.has_hooks(level=1, including_permanent=False)

    def test_all_parameters_combined(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=0, is_permanent=True)
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=1, is_permanent=False)
        self.hook_point.add_hook(self.sample_hook, dir="bwd", level=0, is_permanent=False)
        self.hook_point.add_hook(self.sample_hook, dir="bwd", level=2, is_permanent=True)
        assert self.hook_point.has_hooks(dir="fwd", level=0, including_permanent=True)
        assert not self.hook_point.has_hooks(dir="fwd", level=0, including_permanent=False)
        assert self.hook_point.has_hooks(dir="fwd", level=1, including_permanent=False)
        assert self.hook_point.has_hooks(dir="bwd", level=0, including_permanent=False)
        assert not self.hook_point.has_hooks(dir="bwd", level=1, including_permanent=False)
        assert self.hook_point.has_hooks(dir="bwd", level=2, including_permanent=True)

    def test_invalid_direction_raises_error(self):
        # ADAPTED: TransformerLens expects beartype's BeartypeCallHintParamViolation (its type checker
        # rejects the Literal before the method runs); hookedmlp's has_hooks checks the value itself and
        # raises a UsageError, a ValueError, naming the valid directions.
        with pytest.raises(ValueError, match="dir must be one of 'fwd', 'bwd', 'both', got 'invalid'"):
            self.hook_point.has_hooks(dir="invalid")  # type: ignore

    def test_multiple_hooks_same_criteria(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=0, is_permanent=False)
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=0, is_permanent=False)
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=0, is_permanent=False)
        assert self.hook_point.has_hooks(dir="fwd", level=0, including_permanent=False)

    def test_hook_removal_affects_detection(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd")
        assert self.hook_point.has_hooks()
        self.hook_point.remove_hooks(dir="both")
        assert not self.hook_point.has_hooks()

    def test_default_parameter_values(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=True, level=0)
        self.hook_point.add_hook(self.sample_hook, dir="bwd", is_permanent=False, level=1)
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(dir="both", including_permanent=True, level=None)

    def test_edge_case_empty_after_filtering(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=True, level=5)
        assert not self.hook_point.has_hooks(including_permanent=False)
        assert not self.hook_point.has_hooks(dir="bwd")
        assert not self.hook_point.has_hooks(level=0)
        assert not self.hook_point.has_hooks(dir="bwd", level=5, including_permanent=True)

    def test_functional_hook_execution_still_works(self):
        results = []

        def test_hook(activation, hook):
            results.append("hook_called")
            return activation

        self.hook_point.add_hook(test_hook, dir="fwd")
        assert self.hook_point.has_hooks()
        test_input = torch.tensor([1.0, 2.0, 3.0])
        output = self.hook_point(test_input)
        assert torch.equal(output, test_input)
        assert "hook_called" in results

    def test_hook_point_with_conversions(self):
        def simple_hook(activation, hook):
            return activation * 2

        self.hook_point.add_hook(simple_hook, dir="fwd")
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(dir="fwd")
        test_input = torch.tensor([1.0, 2.0])
        output = self.hook_point(test_input)
        expected = torch.tensor([2.0, 4.0])
        assert torch.allclose(output, expected)


# ======================================================================================
# tests/unit/test_hook_introspection.py
# ======================================================================================


class _ToyModel(HookedRoot):
    """Minimal HookedRoot with two hook points for testing."""

    def __init__(self):
        super().__init__()
        self.hook_a = HookPoint()
        self.hook_b = HookPoint()
        self.setup()


def _my_named_hook(activation, hook):
    return activation


def _other_hook(activation, hook):
    return activation


def test_lens_handle_stores_user_hook():
    hp = HookPoint()
    hp.add_hook(_my_named_hook, dir="fwd")
    assert hp.fwd_hooks[0].user_hook is _my_named_hook
    hp.remove_hooks("both", including_permanent=True)  # cleanup


def test_hookpoint_repr_includes_hook_count():
    hp = HookPoint()
    hp.name = "blocks.0.hook_resid_post"
    assert "blocks.0.hook_resid_post" in repr(hp)
    hp.add_hook(_my_named_hook, dir="fwd")
    hp.add_hook(_other_hook, dir="fwd")
    rep = repr(hp)
    assert "2 fwd" in rep
    assert "bwd" not in rep
    hp.remove_hooks("both", including_permanent=True)  # cleanup


def test_hookpoint_repr_with_no_name_and_no_hooks():
    assert repr(HookPoint()) == "HookPoint()"


def test_list_hooks_empty_model_returns_empty_dict():
    model = _ToyModel()
    assert model.list_hooks() == {}


def test_list_hooks_returns_user_callable():
    model = _ToyModel()
    model.hook_a.add_hook(_my_named_hook, dir="fwd")
    result = model.list_hooks()
    assert set(result.keys()) == {"hook_a"}
    handles = result["hook_a"]
    assert len(handles) == 1
    assert handles[0].user_hook is _my_named_hook
    model.reset_hooks(including_permanent=True)  # cleanup


def test_list_hooks_name_filter_string():
    model = _ToyModel()
    model.hook_a.add_hook(_my_named_hook, dir="fwd")
    model.hook_b.add_hook(_other_hook, dir="fwd")
    assert set(model.list_hooks(name_filter="hook_a").keys()) == {"hook_a"}
    model.reset_hooks(including_permanent=True)  # cleanup


def test_list_hooks_name_filter_list():
    model = _ToyModel()
    model.hook_a.add_hook(_my_named_hook, dir="fwd")
    model.hook_b.add_hook(_other_hook, dir="fwd")
    assert set(model.list_hooks(name_filter=["hook_a", "hook_b"]).keys()) == {"hook_a", "hook_b"}
    assert set(model.list_hooks(name_filter=["hook_b"]).keys()) == {"hook_b"}
    model.reset_hooks(including_permanent=True)  # cleanup


def test_list_hooks_name_filter_callable():
    model = _ToyModel()
    model.hook_a.add_hook(_my_named_hook, dir="fwd")
    model.hook_b.add_hook(_other_hook, dir="fwd")
    result = model.list_hooks(name_filter=lambda n: n.endswith("a"))
    assert set(result.keys()) == {"hook_a"}
    model.reset_hooks(including_permanent=True)  # cleanup


def test_list_hooks_direction_filter():
    model = _ToyModel()
    model.hook_a.add_hook(_my_named_hook, dir="fwd")
    model.hook_a.add_hook(_other_hook, dir="bwd")
    assert len(model.list_hooks(dir="fwd")["hook_a"]) == 1
    assert len(model.list_hooks(dir="bwd")["hook_a"]) == 1
    assert len(model.list_hooks(dir="both")["hook_a"]) == 2
    model.reset_hooks(including_permanent=True)  # cleanup


def test_list_hooks_excludes_permanent_when_requested():
    model = _ToyModel()
    model.hook_a.add_hook(_my_named_hook, dir="fwd", is_permanent=True)
    model.hook_a.add_hook(_other_hook, dir="fwd", is_permanent=False)
    assert len(model.list_hooks(including_permanent=True)["hook_a"]) == 2
    handles = model.list_hooks(including_permanent=False)["hook_a"]
    assert len(handles) == 1
    assert handles[0].user_hook is _other_hook
    model.reset_hooks(including_permanent=True)  # cleanup


def test_mixin_works_on_class_with_hook_dict_attribute():
    """Pin the duck-typed contract: mixin reads ``hook_dict`` off any class that exposes it."""

    class Bag(HookIntrospectionMixin):
        def __init__(self):
            hp = HookPoint()
            hp.add_hook(_my_named_hook, dir="fwd")
            self.hook_dict = {"only_hook": hp}

    bag = Bag()
    result = bag.list_hooks()
    assert set(result.keys()) == {"only_hook"}
    assert result["only_hook"][0].user_hook is _my_named_hook
    bag.hook_dict["only_hook"].remove_hooks("both", including_permanent=True)  # cleanup


def test_mixin_works_on_class_with_hook_dict_property():
    """``getattr`` indirection must accept a ``@property`` provider too (bridge case)."""

    class PropertyBag(HookIntrospectionMixin):
        def __init__(self):
            self._hooks = {"only_hook": HookPoint()}
            self._hooks["only_hook"].add_hook(_my_named_hook, dir="fwd")

        @property
        def hook_dict(self):
            return self._hooks

    bag = PropertyBag()
    result = bag.list_hooks()
    assert result["only_hook"][0].user_hook is _my_named_hook
    bag.hook_dict["only_hook"].remove_hooks("both", including_permanent=True)  # cleanup


# ======================================================================================
# tests/unit/test_hooked_root_module.py
# ======================================================================================


def test_legacy_hook_points_import_still_works(monkeypatch):
    """Back-compat: code written before a move imports the class from its old module, with a DeprecationWarning.

    ADAPTED to hookedmlp's own move: ``hookedmlp.hooked`` (HookedRoot's module before the package was
    split into folders) is a deprecated alias of ``hookedmlp.hooks.root``. TransformerLens' test reads
    ``transformer_lens.hook_points.HookedRootModule``; the alias warns when first imported, so the test
    imports it afresh.
    """
    import sys

    monkeypatch.delitem(sys.modules, "hookedmlp.hooked", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from hookedmlp.hooked import HookedRoot as Legacy

    assert Legacy is HookedRoot
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert deprecations, "expected a DeprecationWarning from the legacy import path"
    assert "hookedmlp.hooks.root" in str(deprecations[0].message)


def test_legacy_hook_points_attribute_error_for_unknown_names():
    """The alias only re-exports the module's names: other missing attrs should raise (ADAPTED as above)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import hookedmlp.hooked as hp

    try:
        hp.DefinitelyNotARealSymbol  # noqa: B018
    except AttributeError as exc:
        assert "DefinitelyNotARealSymbol" in str(exc)
    else:
        raise AssertionError("expected AttributeError for unknown attribute")


def test_enable_hook_with_name():
    model = HookedRoot()
    model.mod_dict = {"linear": mock.Mock(HookPoint)}
    model.context_level = 5

    hook = lambda x: False  # noqa: E731
    dir = "fwd"

    model._enable_hook_with_name("linear", hook=hook, dir=dir)

    model.mod_dict["linear"].add_hook.assert_called_with(hook, dir="fwd", level=5)


def test_enable_hooks_for_points():
    model = HookedRoot()
    model.mod_dict = {}
    model.context_level = 5

    hook_points = {
        "linear": mock.Mock(HookPoint),
        "attn": mock.Mock(HookPoint),
    }

    enabled = lambda x: x == "attn"  # noqa: E731

    hook = lambda x: False  # noqa: E731
    dir = "bwd"

    model._enable_hooks_for_points(hook_points=hook_points.items(), enabled=enabled, hook=hook, dir=dir)

    hook_points["attn"].add_hook.assert_called_with(hook, dir="bwd", level=5)
    hook_points["linear"].add_hook.assert_not_called()


def test_enable_hook_with_string_param():
    model = HookedRoot()
    model.mod_dict = {"linear": mock.Mock(HookPoint)}
    model.context_level = 5

    hook = lambda x: False  # noqa: E731
    dir = "fwd"

    model._enable_hook("linear", hook=hook, dir=dir)

    model.mod_dict["linear"].add_hook.assert_called_with(hook, dir="fwd", level=5)


def test_enable_hook_with_callable_param():
    model = HookedRoot()
    model.mod_dict = {"linear": mock.Mock(HookPoint)}
    model.hook_dict = {
        "linear": mock.Mock(HookPoint),
        "attn": mock.Mock(HookPoint),
    }
    model.context_level = 5

    enabled = lambda x: x == "attn"  # noqa: E731

    hook = lambda x: False  # noqa: E731
    dir = "fwd"

    model._enable_hook(enabled, hook=hook, dir=dir)

    model.mod_dict["linear"].add_hook.assert_not_called()
    model.hook_dict["attn"].add_hook.assert_called_with(hook, dir="fwd", level=5)
    model.hook_dict["linear"].add_hook.assert_not_called()


# ======================================================================================
# tests/integration/test_hooks.py (solu-1l -> TinyLens(n_layers=1), and a HookedMLP)
# ======================================================================================


class Lens:
    """What the tests read off their model: TransformerLens' ``model``, ``prompt`` and names."""

    def __init__(self, kind: str):
        torch.manual_seed(0)
        if kind == "tinylens":
            self.model = TinyLens(n_layers=1).eval()
            self.prompt = torch.rand(1, 6, generator=torch.Generator().manual_seed(1))
            self.embed_name, self.resid_post = "hook_embed", "blocks.0.hook_resid_post"
            self.logit_bias = self.model.unembed.b_U
        else:  # the hooked chain: its first hook point, and its last hidden activation before the logits
            seq = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5))
            self.model = HookedMLP.from_sequential(seq).eval()
            self.prompt = torch.rand(1, 6, generator=torch.Generator().manual_seed(1))
            self.embed_name, self.resid_post = "layer0.pre", "layer1.post"
            self.logit_bias = seq[2].bias


@pytest.fixture(params=["tinylens", "hookedmlp"])
def lens(request):
    return Lens(request.param)


class Counter:
    def __init__(self):
        self.count = 0

    def inc(self, *args, **kwargs):
        self.count += 1


def test_hook_attaches_normally(lens):
    model, prompt = lens.model, lens.prompt
    embed = lambda name: name == lens.embed_name  # noqa: E731
    c = Counter()
    _ = model.run_with_hooks(prompt, fwd_hooks=[(embed, c.inc)])
    assert all([len(hp.fwd_hooks) == 0 for _, hp in model.hook_dict.items()])
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_perma_hook_attaches_normally(lens):
    model, prompt = lens.model, lens.prompt
    embed = lambda name: name == lens.embed_name  # noqa: E731
    c = Counter()
    model.add_perma_hook(embed, c.inc)
    assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1
    model.run_with_hooks(prompt, fwd_hooks=[])
    assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_hook_context_manager(lens):
    model, prompt = lens.model, lens.prompt
    embed = lambda name: name == lens.embed_name  # noqa: E731
    c = Counter()
    with model.hooks(fwd_hooks=[(embed, c.inc)]):
        assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1
        model.forward(prompt)
    assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 0
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_nested_hook_context_manager(lens):
    model, prompt = lens.model, lens.prompt
    embed = lambda name: name == lens.embed_name  # noqa: E731
    c = Counter()
    with model.hooks(fwd_hooks=[(embed, c.inc)]):
        assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1
        model.forward(prompt)
        assert c.count == 1
        with model.hooks(fwd_hooks=[(embed, c.inc)]):
            assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 2
            model.forward(prompt)
            assert c.count == 3  # 2 from outer, 1 from inner
        assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1
    assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 0
    assert c.count == 3
    model.remove_all_hook_fns(including_permanent=True)


def test_context_manager_run_with_cache(lens):
    model, prompt = lens.model, lens.prompt
    embed = lambda name: name == lens.embed_name  # noqa: E731
    c = Counter()
    with model.hooks(fwd_hooks=[(embed, c.inc)]):
        assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1
        model.run_with_cache(prompt)
        assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1
    assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 0
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_backward_hook_runs_successfully(lens):
    model, prompt = lens.model, lens.prompt
    embed = lambda name: name == lens.embed_name  # noqa: E731
    c = Counter()

    def skip_grad(output_grad: torch.Tensor, hook: Any):
        c.inc()
        return (output_grad,)

    with model.hooks(bwd_hooks=[(embed, skip_grad)]):
        assert len(model.hook_dict[lens.embed_name].bwd_hooks) == 1
        out = model(prompt)
        assert c.count == 0
        out.sum().backward()  # this should run the hook
        assert len(model.hook_dict[lens.embed_name].bwd_hooks) == 1
    assert len(model.hook_dict[lens.embed_name].bwd_hooks) == 0
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_backward_hook_returning_bare_tensor(lens):
    """Regression test for TransformerLens' issue #1160: a backward hook returning a bare tensor."""
    model, prompt = lens.model, lens.prompt
    c = Counter()

    def modify_grad(grad: torch.Tensor, hook: Any):
        c.inc()
        return grad  # bare tensor, NOT (grad,)

    with model.hooks(bwd_hooks=[(lens.resid_post, modify_grad)]):
        out = model(prompt)
        out.sum().backward()
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_backward_hook_returning_none(lens):
    """Backward hooks returning None should not raise."""
    model, prompt = lens.model, lens.prompt
    c = Counter()

    def observe_grad(grad: torch.Tensor, hook: Any):
        c.inc()
        return None

    with model.hooks(bwd_hooks=[(lens.resid_post, observe_grad)]):
        out = model(prompt)
        out.sum().backward()
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_hook_context_manager_with_permanent_hook(lens):
    model, prompt = lens.model, lens.prompt
    embed = lambda name: name == lens.embed_name  # noqa: E731
    c = Counter()
    model.add_perma_hook(embed, c.inc)
    assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1
    with model.hooks(fwd_hooks=[(embed, c.inc)]):
        assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 2
        model.forward(prompt)
    assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1
    assert c.count == 2  # 1 from permanent, 1 from context manager
    model.remove_all_hook_fns(including_permanent=True)


def test_nested_context_manager_with_failure(lens):
    model, prompt = lens.model, lens.prompt
    embed = lambda name: name == lens.embed_name  # noqa: E731

    def fail_hook(z, hook):
        raise ValueError("fail")

    c = Counter()
    with model.hooks(fwd_hooks=[(embed, c.inc)]):
        with pytest.raises(ValueError):
            with model.hooks(fwd_hooks=[(embed, fail_hook)]):
                assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 2
                model.forward(prompt)
        assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1
        assert c.count == 1
    assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 0
    model.remove_all_hook_fns(including_permanent=True)


def test_reset_hooks_in_context_manager(lens):
    model = lens.model
    embed = lambda name: name == lens.embed_name  # noqa: E731
    c = Counter()
    with model.hooks(fwd_hooks=[(embed, c.inc)]):
        assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1
        model.reset_hooks()
        assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 0
    assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 0
    model.remove_all_hook_fns(including_permanent=True)


def test_remove_hook(lens):
    model, prompt = lens.model, lens.prompt
    embed = lambda name: name == lens.embed_name  # noqa: E731
    c = Counter()
    model.add_perma_hook(embed, c.inc)
    assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1  # 1 after adding
    model.remove_all_hook_fns()
    assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 1  # permanent not removed without flag
    model.remove_all_hook_fns(including_permanent=True)
    assert len(model.hook_dict[lens.embed_name].fwd_hooks) == 0  # removed now
    model.run_with_hooks(prompt, fwd_hooks=[])
    assert c.count == 0
    model.remove_all_hook_fns(including_permanent=True)


def test_conditional_hooks():
    """Test that it's only possible to add certain hooks when certain conditions are met.

    TinyLens only (a HookedMLP has no optional hook points); its shapes have no position axis.
    """
    torch.manual_seed(0)
    model = TinyLens(n_layers=1).eval()
    prompt = torch.rand(1, 6)

    def identity_hook(z, hook):
        return z

    for hook_name, set_use_hook_function in [
        ("blocks.0.attn.hook_result", model.set_use_attn_result),
        ("blocks.0.hook_q_input", model.set_use_split_qkv_input),
        ("blocks.0.hook_mlp_in", model.set_use_hook_mlp_in),
        ("blocks.0.hook_attn_in", model.set_use_attn_in),
    ]:
        model.reset_hooks()
        set_use_hook_function(False)
        # Ensure that we get an error when we inappropriately add a hook
        with pytest.raises(AssertionError):
            model.add_hook(hook_name, identity_hook)

        # Ensure we DON'T get an error when we add a hook properly
        set_use_hook_function(True)
        model.add_hook(hook_name, identity_hook)

        # Reset the flag
        set_use_hook_function(False)

    # TransformerLens: (1, 4, d_model) and (1, 4, n_heads, d_model) for a prompt of 4 tokens
    correct_shapes = {
        3: (1, model.cfg.d_model),
        4: (1, model.cfg.n_heads, model.cfg.d_model),
    }

    for hook_name, set_use_hook_function, number_of_dimensions in [
        ("blocks.0.hook_q_input", model.set_use_split_qkv_input, 4),
        ("blocks.0.hook_attn_in", model.set_use_attn_in, 4),
        ("blocks.0.hook_mlp_in", model.set_use_hook_mlp_in, 3),
    ]:
        model.reset_hooks()
        set_use_hook_function(True)

        cache = model.run_with_cache(
            prompt,
            names_filter=lambda x: x == hook_name,
        )[1]

        assert list(cache.keys()) == [hook_name]
        assert cache[hook_name].shape == correct_shapes[number_of_dimensions]

        # Reset the flag
        set_use_hook_function(False)
    model.reset_hooks()  # cleanup


@pytest.mark.parametrize(
    "zero_attach_pos,prepend",
    [(zero_attach_pos, prepend) for zero_attach_pos in range(2) for prepend in [True, False]],
)
def test_prepending_hooks(lens, zero_attach_pos, prepend):
    """Zero the last residual activations with one hook, add noise with another: the logits are the
    unembedding's bias exactly when the zeroing hook runs last."""
    model = lens.model

    def set_to_zero(z, hook):
        z[:] = 0.0
        return z

    def set_to_randn(z, hook):
        z = torch.randn_like(z) * 0.1
        return z

    model.reset_hooks()

    for hook_idx in range(2):
        model.add_hook(
            lens.resid_post,
            set_to_zero if hook_idx == zero_attach_pos else set_to_randn,
            prepend=prepend,
        )
    logits = model(torch.rand(5, 6))  # TransformerLens: torch.arange(5)[None, :], five tokens

    logits_are_unembed_bias = (zero_attach_pos == 1) != prepend
    # the logits should be equal to the unembed bias
    # exactly when the zero hook is attached last XOR it is prepended

    assert torch.allclose(logits, lens.logit_bias[None, :]) == logits_are_unembed_bias
    model.reset_hooks()  # cleanup


# ======================================================================================
# tests/acceptance/test_activation_cache.py: the cache's own tests (solu-2l -> TinyLens(n_layers=2))
# ======================================================================================


def load_model():
    torch.manual_seed(0)
    return TinyLens(n_layers=2).eval()


def get_ioi_tokens_and_answer_tokens(model):
    """TransformerLens: the 8 IOI prompts as tokens. Here: a seeded batch of 8 inputs (answers unused)."""
    return torch.rand(8, model.cfg.d_in, generator=torch.Generator().manual_seed(2)), None


@torch.no_grad
def test_remove_batch_dim():
    model = load_model()
    tokens, _ = get_ioi_tokens_and_answer_tokens(model)
    _, cache = model.run_with_cache(tokens[:1])

    assert cache.has_batch_dim
    shapes_before_removal = {key: cache.cache_dict[key].shape for key in cache.cache_dict}

    # Removing batch dim changes the shape of the cached tensors
    cache.remove_batch_dim()
    assert not cache.has_batch_dim
    assert all(shapes_before_removal[key][1:] == cache.cache_dict[key].shape for key in shapes_before_removal)

    # Removing batch dim again does not change anything
    cache.remove_batch_dim()
    assert not cache.has_batch_dim
    assert all(shapes_before_removal[key][1:] == cache.cache_dict[key].shape for key in shapes_before_removal)


@torch.no_grad
def test_remove_batch_dim_fails_if_batch_gt_1():
    model = load_model()
    tokens, _ = get_ioi_tokens_and_answer_tokens(model)
    _, cache = model.run_with_cache(tokens)

    assert cache.has_batch_dim
    with pytest.raises(AssertionError):
        cache.remove_batch_dim()


@torch.no_grad
def test_retrieve_activations():
    model = load_model()
    tokens, _ = get_ioi_tokens_and_answer_tokens(model)
    _, cache = model.run_with_cache(tokens)

    key = ("scale", 1, "ln1")
    str_key = get_act_name(*key)  # TransformerLens: utils.get_act_name
    assert torch.equal(cache[key], cache[str_key])

    key = ("scale", -1, "ln1")
    str_key = f"scale{model.cfg.n_layers - 1}ln1"
    assert torch.equal(cache[key], cache[str_key])

    key = ("k", -1, None)
    str_key = f"blocks.{model.cfg.n_layers - 1}.attn.hook_k"
    assert torch.equal(cache[key], cache[str_key])

    key = "embed"
    str_key = get_act_name(key)
    assert torch.equal(cache[key], cache[str_key])

    key = ("embed", None)
    str_key = get_act_name(*key)
    assert torch.equal(cache[key], cache[str_key])


@torch.no_grad
def test_get_items():
    model = load_model()
    tokens, _ = get_ioi_tokens_and_answer_tokens(model)
    _, cache = model.run_with_cache(tokens)

    assert all(
        cache_key == cache_dict_key and torch.equal(cache_val, cache_dict_val)
        for (cache_key, cache_val), (cache_dict_key, cache_dict_val) in zip(cache.items(), cache.cache_dict.items())
    )


@torch.no_grad
def test_get_values():
    model = load_model()
    tokens, _ = get_ioi_tokens_and_answer_tokens(model)
    _, cache = model.run_with_cache(tokens)

    assert all(
        torch.equal(cache_val, cache_dict_val)
        for cache_val, cache_dict_val in zip(cache.values(), cache.cache_dict.values())
    )


@torch.no_grad
def test_get_keys():
    model = load_model()
    tokens, _ = get_ioi_tokens_and_answer_tokens(model)
    _, cache = model.run_with_cache(tokens)

    assert all(cache_key == cache_dict_key for cache_key, cache_dict_key in zip(cache.keys(), cache.cache_dict.keys()))


@torch.no_grad
def test_apply_slice_to_batch_dim():
    model = load_model()
    tokens, _ = get_ioi_tokens_and_answer_tokens(model)
    _, cache = model.run_with_cache(tokens)

    assert cache.has_batch_dim
    batch_slice = (2, 4)  # TransformerLens: Slice((2, 4)); hookedmlp takes Slice's input as it is
    new_cache = cache.apply_slice_to_batch_dim(batch_slice)

    assert new_cache.has_batch_dim
    assert all(torch.equal(cache[key][2:4], new_cache[key]) for key in cache.cache_dict)

    batch_slice = 2
    new_cache = cache.apply_slice_to_batch_dim(batch_slice)

    assert not new_cache.has_batch_dim
    assert all(torch.equal(cache[key][2], new_cache[key]) for key in cache.cache_dict)


@torch.no_grad
def test_toggle_autodiff():
    model = load_model()
    tokens, _ = get_ioi_tokens_and_answer_tokens(model)
    _, cache = model.run_with_cache(tokens)

    assert not torch.is_grad_enabled()
    cache.toggle_autodiff(mode=True)
    assert torch.is_grad_enabled()


@torch.no_grad
def test_stack_activation():
    model = load_model()
    tokens, _ = get_ioi_tokens_and_answer_tokens(model)
    _, cache = model.run_with_cache(tokens)

    stack = cache.stack_activation("scale", -1, "ln1")
    assert all(torch.equal(cache[("scale", layer, "ln1")], stack[layer]) for layer in range(model.cfg.n_layers))

    stack = cache.stack_activation("scale", 1, "ln1")
    assert all(torch.equal(cache[("scale", layer, "ln1")], stack[layer]) for layer in range(1))


# ======================================================================================
# tests/integration/test_cache_hook_names.py (solu-1l -> TinyLens(n_layers=1))
# ======================================================================================

# TransformerLens' list for solu-1l, less what TinyLens lacks: positional embeddings, queries,
# values, attention scores and patterns, SoLU's inner norm, and the unembedding's hook_in/hook_out.
act_names_in_cache = [
    "hook_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_scale",
    "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_z",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_mid",
    "blocks.0.ln2.hook_scale",
    "blocks.0.ln2.hook_normalized",
    "blocks.0.mlp.hook_pre",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "ln_final.hook_scale",
    "ln_final.hook_normalized",
]


def test_cache_hook_names():
    model = TinyLens(n_layers=1)
    prompt = torch.rand(1, 6)
    _, cache = model.run_with_cache(prompt)
    assert list(cache.keys()) == act_names_in_cache
