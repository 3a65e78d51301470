"""Shared set-up for the docstring examples (pytest's ``doctest_namespace``)."""

import pytest


@pytest.fixture(autouse=True)
def _doctest_names(request: pytest.FixtureRequest) -> None:
    """The names every docstring example may use: torch, nn, the shipped ``model``, MNIST test ``images``/``labels``,
    a seeded ``tiny`` model (16-8-8-3) with inputs ``tiny_x``, ``load_mnist``, ``first_example``, and the
    main classes and functions."""
    if not isinstance(request.node, pytest.DoctestItem):
        return
    import torch
    from torch import nn

    import hookedmlp
    import hookedmlp_analysis as analysis
    from hookedmlp.data import first_example, load_mnist
    from hookedmlp.train import TrainSettings, train_model
    from hookedmlp_analysis.published import study_tables

    namespace = request.getfixturevalue("doctest_namespace")
    torch.manual_seed(0)
    tiny = hookedmlp.HookedMLP.from_sequential(
        nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    ).eval()
    images, labels = load_mnist("test")
    namespace.update(
        torch=torch,
        nn=nn,
        tiny=tiny,
        tiny_x=torch.rand(5, 16, generator=torch.Generator().manual_seed(1)),
        model=_shipped(),
        images=images,
        labels=labels,
        load_mnist=load_mnist,
        first_example=first_example,
        study_tables=study_tables,
        TrainSettings=TrainSettings,
        train_model=train_model,
        **{name: getattr(hookedmlp, name) for name in hookedmlp.__all__ if name[0].isupper()},
        **{name: getattr(analysis, name) for name in analysis.__all__},
    )


_MODEL = []


def _shipped():
    """The shipped mnist-mlp, loaded once per session (examples must not modify it)."""
    if not _MODEL:
        import hookedmlp

        _MODEL.append(hookedmlp.HookedMLP.from_pretrained("mnist-mlp"))
    return _MODEL[0]
