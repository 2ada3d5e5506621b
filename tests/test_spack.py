"""The Spack recipe agrees with pyproject.toml (Spack itself cannot be installed here).

package.py is read with ``ast``, never imported (it needs Spack). Every runtime
dependency and every extra of the Python package must appear in the recipe with
the same lower bound, under a variant of the extra's name; the project's
version must be one of the recipe's; the site environments must name the
recipe's real variants and this repository.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "spack" / "packages" / "py-warpstore" / "package.py"

# Extras that are not variants, and why.
NOT_VARIANTS = {
    "all": "a convenience bundle of other extras",
    "test": "test tooling, Spack's type='test' dependencies",
    "mpich": "PyPI's MPI for laptops; Spack uses the site's MPI through the virtual 'mpi'",
}
# Variants with no pip extra, and why.
SPACK_ONLY = {
    "margo": "pymargo is not on PyPI; Spack builds py-mochi-margo with Mercury",
    "daos": "pydaos ships with DAOS, not on PyPI",
}


def spack_name(requirement: str) -> tuple[str, str | None]:
    """``'ucxx-cu12>=0.44'`` -> (``'py-ucxx'``, ``'0.44'``)."""
    match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(?:>=\s*([0-9.]+))?", requirement)
    assert match, requirement
    name = match.group(1).lower().replace("_", "-")
    name = re.sub(r"-cu\d+$", "", name)  # CUDA-flavoured wheels: one Spack package
    return f"py-{name}", match.group(2)


def recipe() -> dict[str, Any]:
    tree = ast.parse(RECIPE.read_text())
    versions, variants, deps = [], {}, []

    def const(node: ast.AST) -> Any:
        return node.value if isinstance(node, ast.Constant) else None

    def visit(nodes: list[ast.stmt], when: str | None) -> None:
        for node in nodes:
            if isinstance(node, ast.With):
                call = node.items[0].context_expr
                assert isinstance(call, ast.Call)
                visit(node.body, const(call.args[0]))
            elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                call = node.value
                fn = call.func.id if isinstance(call.func, ast.Name) else ""
                kwargs = {k.arg: k.value for k in call.keywords}
                if fn == "version":
                    versions.append(const(call.args[0]))
                elif fn == "variant":
                    variants[const(call.args[0])] = const(kwargs["default"])
                elif fn == "depends_on":
                    kind = kwargs.get("type")
                    types = (
                        [const(e) for e in kind.elts]
                        if isinstance(kind, ast.Tuple)
                        else [const(kind)] if kind is not None else ["build", "link"]
                    )
                    deps.append({"spec": const(call.args[0]), "when": when, "type": types})

    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    visit(cls.body, None)
    return {"versions": versions, "variants": variants, "deps": deps}


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def find(deps: list[dict[str, Any]], name: str, when: str | None) -> dict[str, Any] | None:
    for d in deps:
        if d["spec"].split("@")[0].split()[0] == name and d["when"] == when:
            return d
    return None


def test_recipe_is_valid_python_named_as_spack_expects() -> None:
    compile(RECIPE.read_text(), str(RECIPE), "exec")
    tree = ast.parse(RECIPE.read_text())
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["PyWarpstore"]  # py-warpstore -> PyWarpstore
    repo = yaml.safe_load((REPO / "spack" / "repo.yaml").read_text())
    assert repo["repo"]["namespace"] == "warpstore"


def test_project_version_is_a_recipe_version(pyproject: dict[str, Any]) -> None:
    assert pyproject["project"]["version"] in recipe()["versions"]


def test_python_and_build_backend(pyproject: dict[str, Any]) -> None:
    deps = recipe()["deps"]
    floor = pyproject["project"]["requires-python"].removeprefix(">=")
    python = find(deps, "python", None)
    assert python and python["spec"] == f"python@{floor}:" and "run" in python["type"]
    for req in pyproject["build-system"]["requires"]:
        name, low = spack_name(req)
        dep = find(deps, name, None)
        assert dep and dep["spec"] == f"{name}@{low}:" and dep["type"] == ["build"]


def test_every_runtime_dependency_is_in_the_recipe(pyproject: dict[str, Any]) -> None:
    deps = recipe()["deps"]
    for req in pyproject["project"]["dependencies"]:
        name, low = spack_name(req)
        dep = find(deps, name, None)
        assert dep is not None, f"{req}: no depends_on('{name}...') in package.py"
        assert dep["spec"] == (f"{name}@{low}:" if low else name), (req, dep)
        assert "run" in dep["type"] and "build" in dep["type"]


def test_every_extra_has_its_variant_and_dependencies(pyproject: dict[str, Any]) -> None:
    r = recipe()
    extras = pyproject["project"]["optional-dependencies"]
    for extra, reqs in extras.items():
        if extra in NOT_VARIANTS:
            continue
        assert extra in r["variants"], f"extra [{extra}] has no variant in package.py"
        for req in reqs:
            name, low = spack_name(req)
            dep = find(r["deps"], name, f"+{extra}")
            assert dep is not None, f"[{extra}] {req}: no depends_on under when('+{extra}')"
            assert dep["spec"] == (f"{name}@{low}:" if low else name), (req, dep)
            assert "run" in dep["type"]
    for variant in r["variants"]:
        if variant not in extras:
            assert variant in SPACK_ONLY, f"variant {variant} has no extra and no reason"
            assert any(d["when"] == f"+{variant}" for d in r["deps"])
    assert find(r["deps"], "mpi", "+mpi") is not None  # the site's MPI, not a wheel


@pytest.mark.parametrize("site", ["polaris", "aurora", "perlmutter", "frontier"])
def test_site_environments(site: str) -> None:
    env = yaml.safe_load((REPO / "spack" / "environments" / site / "spack.yaml").read_text())
    spack = env["spack"]
    assert (REPO / "spack" / "environments" / site / spack["repos"][0]).resolve() == (
        REPO / "spack"
    )
    variants = recipe()["variants"]
    (spec,) = [s for s in spack["specs"] if s.startswith("py-warpstore")]
    for token in spec.split()[1:]:
        assert token[0] in "+~" and token[1:] in variants, f"{site}: unknown variant {token}"
    packages = spack["packages"]
    mpi = "mpich" if site == "aurora" else "cray-mpich"
    assert packages[mpi]["buildable"] is False and packages[mpi]["externals"]
    assert packages["libfabric"]["buildable"] is False
    assert "fabrics=cxi" in packages["libfabric"]["externals"][0]["spec"]
    if "+daos" in spec:
        assert packages["daos"]["buildable"] is False
