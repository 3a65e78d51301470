"""Code-health figures of hookedmlp/, hookedmlp_cli/ and analysis/ (issue 14), measured with ast.

    python bench/code_health.py [--per-file]

Docstring lines are the lines of module, class and function docstrings; code lines are the
other non-blank, non-comment lines. Also counted: docstring example lines (``>>>``), raises
of a bare built-in exception (user mistakes raise ``HookedMLPError`` subclasses), ``assert``
statements, and lines over 100 and 120 characters.
"""

import argparse
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hookedmlp", "hookedmlp_cli", "analysis")
BUILTINS = ("ValueError", "TypeError", "KeyError", "IndexError", "RuntimeError", "AssertionError", "OSError")


def measure(path: Path) -> dict[str, int]:
    source = path.read_text()
    tree = ast.parse(source)
    doc_lines: set[int] = set()
    examples = 0
    for node in ast.walk(tree):
        documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        if isinstance(node, documented) and ast.get_docstring(node):
            expr = node.body[0]
            doc_lines.update(range(expr.lineno, expr.end_lineno + 1))
            examples += len(re.findall(r"^[ \t]*>>> ", ast.get_docstring(node), re.M))
    lines = source.splitlines()
    code = sum(
        1 for i, line in enumerate(lines, 1) if i not in doc_lines and line.strip() and not line.strip().startswith("#")
    )
    raises = sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.Raise)
        and isinstance(node.exc, ast.Call)
        and isinstance(node.exc.func, ast.Name)
        and node.exc.func.id in BUILTINS
    )
    return {
        "doc": len(doc_lines),
        "code": code,
        "examples": examples,
        "builtin_raises": raises,
        "asserts": sum(isinstance(node, ast.Assert) for node in ast.walk(tree)),
        "over_100": sum(len(line) > 100 for line in lines),
        "over_120": sum(len(line) > 120 for line in lines),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-file", action="store_true", help="also print each file's figures")
    args = parser.parse_args()
    files = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
    per = {p.relative_to(ROOT).as_posix(): measure(p) for p in files}
    total = {key: sum(m[key] for m in per.values()) for key in next(iter(per.values()))}
    if args.per_file:
        for name, m in sorted(per.items(), key=lambda item: -item[1]["doc"]):
            print(f"{name:32} doc {m['doc']:4}  code {m['code']:4}  ratio {m['doc'] / max(m['code'], 1):.2f}")
    print(
        f"{len(files)} files: {total['doc']} docstring lines, {total['code']} code lines (ratio "
        f"{total['doc'] / total['code']:.2f}), {total['examples']} docstring example lines (>>>), "
        f"{total['builtin_raises']} raises of a bare built-in, {total['asserts']} asserts, "
        f"{total['over_100']} lines over 100 characters, {total['over_120']} over 120"
    )


if __name__ == "__main__":
    main()
