"""HookIntrospectionMixin: ``list_hooks()`` for any class with a ``hook_dict`` (TransformerLens' mixin).

``HookedRoot`` has it; so may any object that exposes its hook points as ``hook_dict`` (an
attribute or a property), name -> ``HookPoint``.
"""

from typing import Any

from hookedmlp.checks import check_choice
from hookedmlp.hooks.handle import SELECTIONS, HookHandle
from hookedmlp.hooks.names import NamesFilter, select

__all__ = ["HookIntrospectionMixin"]


class HookIntrospectionMixin:
    """Adds ``list_hooks`` to a class exposing ``hook_dict`` (hook name -> ``HookPoint``)."""

    def list_hooks(
        self, name_filter: NamesFilter = None, dir: str = "both", including_permanent: bool = True
    ) -> dict[str, list[HookHandle]]:
        """The attached hooks by hook name, forward then backward; hook points without any are left out.

        Args:
            name_filter: a hook name, a glob, a list of them, or a callable ``name -> bool``
                (default all). An unknown name, or a filter that selects no hook point, raises
                ``HookNameError`` with the closest names.
            dir: ``"fwd"``, ``"bwd"`` or ``"both"``.
            including_permanent: with ``False``, permanent hooks are left out.

        Examples:
            >>> with tiny.hooks(fwd_hooks=[("layer1.post", lambda act, hook: None)]):
            ...     {name: len(handles) for name, handles in tiny.list_hooks().items()}
            {'layer1.post': 1}
        """
        check_choice(dir, SELECTIONS, "dir")
        hook_dict: dict[str, Any] = self.hook_dict  # type: ignore[attr-defined]  # an attribute or a property
        out = {}
        # a HookedRoot resolves names itself (it also says when setup() was forgotten)
        resolve = getattr(self, "resolve_names", None) or (lambda f: select(list(hook_dict), f))
        for name in list(hook_dict) if name_filter is None else resolve(name_filter):
            hp = hook_dict[name]
            handles = [
                h
                for h in (*(hp.fwd_hooks if dir != "bwd" else ()), *(hp.bwd_hooks if dir != "fwd" else ()))
                if including_permanent or not h.is_permanent
            ]
            if handles:
                out[name] = handles
        return out
