"""The module paths before the split into folders still import, warn, and give the same objects."""

import importlib
import sys
import warnings

import pytest

from hookedmlp._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_imports_with_a_deprecation_warning(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=rf"^{old} moved to {MOVED[old]}; import it from there$"):
        alias = importlib.import_module(old)
    new = importlib.import_module(MOVED[old])
    for name in new.__all__:
        assert getattr(alias, name) is getattr(new, name)


def test_io_keeps_its_readers_and_writers():
    sys.modules.pop("hookedmlp.io", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import hookedmlp.io as io
    from hookedmlp.files.atomic import atomic_write
    from hookedmlp.files.safe_load import safe_load

    assert io.safe_load is safe_load and io.atomic_write is atomic_write
    assert set(io.__all__) == {"atomic_write", "atomic_save", "check_writable", "safe_load"}


def test_an_unknown_module_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("hookedmlp.no_such_module")
