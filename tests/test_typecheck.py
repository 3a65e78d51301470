"""The suite's faster type checks (tests/_typecheck.py) make the checks they replace: a union, a shape, a signature."""

import functools
import inspect
from typing import Optional

import _typecheck
import pytest
import torch
import typeguard
from jaxtyping import Float, jaxtyped
from torch import Tensor


def test_both_are_in_place():
    assert typeguard.check_type.__module__ == "_typecheck" and typeguard.inspect is not inspect


@typeguard.typechecked
def _union(x: int | str, y: Optional[float] = None) -> int | str:
    return x


def test_a_union_annotation_is_still_checked():
    assert _union(1) == 1 and _union("a", y=0.5) == "a"
    with pytest.raises(TypeError, match='type of argument "x" must be one of \\(int, str\\); got float instead'):
        _union(1.5)
    with pytest.raises(TypeError, match='type of argument "y" must be one of \\(float, NoneType\\); got str instead'):
        _union(1, y="no")


@jaxtyped(typechecker=typeguard.typechecked)
def _rows(x: Float[Tensor, "batch 3"], y: Float[Tensor, "batch 3"] | None = None) -> Float[Tensor, " batch"]:
    return x.sum(1)


def test_a_shape_annotation_is_still_checked():
    assert _rows(torch.ones(2, 3)).tolist() == [3.0, 3.0]
    with pytest.raises(TypeError):
        _rows(torch.ones(2, 4))
    with pytest.raises(TypeError):
        _rows(torch.ones(2, 3), torch.ones(5, 3))  # batch 2 bound by x, 5 here


CASES = [
    (value, annotation)
    for annotation in (int | str, Optional[int | None], list[int | str], dict[str, int | None], tuple[int, str | bytes])
    for value in (1, "a", None, 1.5, [1, "a"], [1, 1.5], {"k": 1}, {"k": "v"}, (1, "a"), (1, 2), b"b")
]


@pytest.mark.parametrize("with_memo", [False, True])
def test_the_replacement_gives_jaxtypings_outcome_and_message_for_every_case(with_memo):
    """Each (value, annotation): both accept, or both raise the same TypeError."""

    def outcome(check, value, annotation):
        memo = typeguard._TypeCheckMemo(globals(), locals()) if with_memo else None
        try:
            check("x", value, annotation, memo)
        except TypeError as e:
            return str(e)
        return None

    outcomes = [(outcome(_typecheck.JAXTYPING_SHIM, *c), outcome(typeguard.check_type, *c)) for c in CASES]
    assert [old for old, _ in outcomes] == [new for _, new in outcomes]
    assert sum(old is None for old, _ in outcomes) == 7  # 1 and "a"; 1 and None; [1, "a"]; {"k": 1}; (1, "a")


def test_a_plain_functions_signature_is_computed_once_and_equals_inspects():
    first = typeguard.inspect.signature(_union.__wrapped__)
    assert first is typeguard.inspect.signature(_union.__wrapped__) and first == inspect.signature(_union.__wrapped__)
    partial = functools.partial(_union.__wrapped__, 1)  # any other callable: computed each time, as before
    assert typeguard.inspect.signature(partial) == inspect.signature(partial)
    assert typeguard.inspect.signature(partial) is not typeguard.inspect.signature(partial)
