"""BaseTensorConversion: how a ``HookPoint`` shows its activation to hooks (``HookPoint.enable_reshape``).

TransformerLens' class of the same name: ``convert`` turns the activation into the form hooks
see (through ``input_filter``, ``handle_conversion`` and ``output_filter``), and ``revert`` turns
a hook's result back into the activation's own form. Subclasses implement ``handle_conversion``
(and ``revert`` where the conversion is not its own inverse).
"""

from collections.abc import Callable
from typing import Any, Optional

__all__ = ["BaseTensorConversion"]


class BaseTensorConversion:
    """A conversion for ``HookPoint.enable_reshape``: hooks get ``convert(act)``, their result goes through ``revert``.

    Args:
        input_filter: applied to the activation before ``handle_conversion``.
        output_filter: applied to what ``handle_conversion`` returns.

    Examples:
        >>> class Heads(BaseTensorConversion):
        ...     def handle_conversion(self, x, *context):
        ...         return x.reshape(*x.shape[:-1], 2, -1)  # [batch, d] -> [batch, 2 heads, d / 2]
        ...     def revert(self, x, *context):
        ...         return x.flatten(-2)
        >>> point = HookPoint()
        >>> point.enable_reshape(Heads())
        >>> with point.add_hook(lambda act, hook: act * torch.tensor([[1.0], [0.0]])):  # zero head 1
        ...     point(torch.ones(1, 4)).tolist()
        [[1.0, 1.0, 0.0, 0.0]]
    """

    def __init__(
        self, input_filter: Optional[Callable[[Any], Any]] = None, output_filter: Optional[Callable[[Any], Any]] = None
    ) -> None:
        self.input_filter = input_filter
        self.output_filter = output_filter

    def convert(self, input_value: Any, *full_context: Any) -> Any:
        """The activation as hooks see it."""
        value = self.input_filter(input_value) if self.input_filter is not None else input_value
        out = self.handle_conversion(value, *full_context)
        return self.output_filter(out) if self.output_filter is not None else out

    def handle_conversion(self, input_value: Any, *full_context: Any) -> Any:
        """The conversion itself: subclasses implement it."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement handle_conversion(input_value, *full_context), returning the "
            "activation as hooks should see it"
        )

    def revert(self, input_value: Any, *full_context: Any) -> Any:
        """A hook's result, back in the activation's form (by default unchanged)."""
        return input_value
