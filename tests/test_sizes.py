"""hookedmlp.sizes: the estimates against the models they describe, the budget and where it comes from, and
recipes refused on the estimate before anything is allocated (issue 21, item 8)."""

import math
import os
import resource
import zipfile
from pathlib import Path

import pytest
import torch

from hookedmlp import ConfigError, LeNetConfig, MLPConfig, ResidualConfig, SizeError
from hookedmlp.sizes import (
    ENV,
    activation_bytes,
    budget,
    check_bytes,
    declared_bytes,
    file_bytes,
    human,
    memory_budget,
    recipe_bytes,
    tensor_bytes,
)
from hookedmlp.train import build_model

RECIPES = [
    MLPConfig(),
    MLPConfig(d_in=16, d_hidden=(), d_out=3),
    MLPConfig(d_hidden=(7, 5), norm="batchnorm", dropout=0.2),
    MLPConfig(d_hidden=(9,), norm="layernorm", bias=False),
    LeNetConfig(),
    LeNetConfig(channels=(2, 3), d_hidden=(5, 4), in_channels=3),
    ResidualConfig(d_model=8, d_mlp=12, n_blocks=3),
    ResidualConfig(d_model=8, d_mlp=5, n_blocks=1, norm="none"),
]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.summary)
def test_a_recipes_element_counts_are_those_of_the_model_it_builds(recipe):
    model = build_model(recipe)
    assert recipe.state_elements == sum(t.numel() for t in model.state_dict().values())
    assert recipe.activation_elements == sum(math.prod(s) for s in model.activation_shapes().values())
    assert recipe_bytes(recipe) == 4 * (recipe.state_elements + recipe.activation_elements)
    assert recipe_bytes(recipe, batch_size=3, training=True) == 4 * (
        4 * recipe.state_elements + 2 * 3 * recipe.activation_elements
    )


def test_tensor_and_activation_bytes():
    assert tensor_bytes((10**6, 10**6)) == 4 * 10**12  # exact, never materialised
    assert tensor_bytes((3, 2), torch.float64) == 48
    assert tensor_bytes((5,), torch.bfloat16) == 10
    assert activation_bytes((1, 28, 28), batch=2) == 2 * 784 * 4
    assert declared_bytes([torch.zeros(1).expand(10, 10), torch.zeros(3, dtype=torch.float64)]) == 400 + 24


def test_human():
    assert [human(n) for n in (0, 1023, 1024, 3 * 2**30 // 2, 2**50)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 GiB",
        "1.0 PiB",
    ]


@pytest.mark.parametrize("text, expected", [("1000", 1000), ("64G", 64 << 30), ("1.5k", 1536), ("2 GiB", 2 << 30)])
def test_the_budget_comes_from_the_environment(monkeypatch, text, expected):
    monkeypatch.setenv(ENV, text)
    assert budget() == expected
    with memory_budget(7) as n:  # the context wins over the environment, and is restored
        assert n == budget() == 7
    assert budget() == expected


@pytest.mark.parametrize("text", ["lots", "-5G", "0", "5X"])
def test_a_bad_budget_in_the_environment_says_how_to_write_one(monkeypatch, text):
    monkeypatch.setenv(ENV, text)
    with pytest.raises(ConfigError, match=f"{ENV} must be a size such as 16G, 512M or 17179869184 \\(bytes\\), got"):
        budget()


def test_the_default_budget_is_half_of_the_machines_memory(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert budget() == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


@pytest.mark.parametrize("bad", [0, -1, True])
def test_memory_budget_takes_a_positive_int(bad):
    with pytest.raises(ConfigError, match="memory_budget needs a positive int of bytes"):
        with memory_budget(bad):
            pass


def test_check_bytes_says_what_needs_how_much_and_the_fix(monkeypatch):
    assert check_bytes(100, "x", "fix it") == 100
    with memory_budget(100):
        with pytest.raises(SizeError) as info:
            check_bytes(101, "the thing", "use a smaller one")
    assert isinstance(info.value, MemoryError)
    assert str(info.value) == (
        "the thing needs 101 B (101 bytes), above hookedmlp's memory budget of 100 B (set by memory_budget()); "
        "use a smaller one, or pass a larger memory_budget()"
    )
    monkeypatch.setenv(ENV, "1K")
    with pytest.raises(SizeError) as info:
        check_bytes(3 * 2**30, "the thing", "use a smaller one")
    assert str(info.value).endswith(
        f"(HOOKEDMLP_MAX_BYTES=1K); use a smaller one, or raise the budget with {ENV} (e.g. {ENV}=3G)"
    )


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: MLPConfig(d_hidden=(10**8,)), "a 784-100000000-10 MLP, relu needs 297.7 GiB (319,600,003,216 bytes)"),
        (lambda: ResidualConfig(d_model=10**8), "a residual MLP, d_model 100000000, 2 blocks of d_mlp 512"),
        (lambda: ResidualConfig(n_blocks=100_000), "a residual MLP, d_model 256, 100000 blocks of d_mlp 512"),
        (lambda: LeNetConfig(channels=(100_000, 100_000)), "a LeNet-5-style CNN, channels 100000-100000, relu needs"),
    ],
)
def test_a_huge_recipe_is_refused_before_anything_is_allocated(make, words):
    base = _peak_mb()
    with memory_budget(2**30), pytest.raises(SizeError) as info:
        make()
    assert _peak_mb() < base + 50
    assert str(info.value).startswith(words)
    assert (
        "above hookedmlp's memory budget of 1.0 GiB (set by memory_budget()); use smaller widths or fewer layers"
        in (str(info.value))
    )


def test_a_recipe_within_a_raised_budget_is_accepted():
    big = MLPConfig(d_hidden=(4096,))
    with memory_budget(recipe_bytes(big)):
        assert MLPConfig(d_hidden=(4096,)) == big
    with memory_budget(recipe_bytes(big) - 1), pytest.raises(SizeError):
        MLPConfig(d_hidden=(4096,))


def test_file_bytes_reads_the_declared_sizes_of_a_deflated_zip(tmp_path: Path):
    """A few kilobytes of deflated zeros declare their full size in the zip's directory."""
    plain = tmp_path / "plain.pt"
    torch.save({"a": torch.zeros(10**6)}, plain)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(plain) as z, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            out.writestr(info.filename, z.read(info.filename))
    assert deflated.stat().st_size < 10_000
    declared = file_bytes(deflated)
    assert declared == file_bytes(plain) > 4 * 10**6
    (tmp_path / "pickle.pt").write_bytes(b"\x80\x02K\x01.")  # not a zip: torch's legacy format or a plain pickle
    assert file_bytes(tmp_path / "pickle.pt") is None
