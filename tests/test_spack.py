"""The Spack repository: its recipe agrees with pyproject.toml, and a real Spack reads it.

Two layers. The agreement tests read package.py with ``ast`` (no Spack needed):
every runtime dependency and every extra of the Python package must appear in
the recipe with the same lower bound, under a variant of the extra's name, and
the site environments must name the recipe's real variants, this repository and
this checkout. The Spack tests then run a real Spack (``spack`` from PATH, else
the offline Spack in ``<checkout>/../shared/tools/spack/spack-offline``): the
audit, ``spack spec`` of the default and of every variant, and
``spack concretize -f`` of every environment, created the way the README says.
They skip where no Spack exists, unless ``WARPSTORE_REQUIRE_SPACK=1`` (CI).

Each Spack solve takes about a minute on two cores, so the Spack tests share
one session fixture, concretize several specs per invocation and keep every
Spack state (configuration, caches, the offline Spack's unpacked tree) in a
private temporary directory.
"""

from __future__ import annotations

import ast
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
SPACK_REPO = REPO / "spack" / "spack_repo" / "warpstore"
PACKAGES = SPACK_REPO / "packages"
RECIPE = PACKAGES / "py_warpstore" / "package.py"
ENVIRONMENTS = REPO / "spack" / "environments"
SITES = ["polaris", "aurora", "perlmutter", "frontier"]
ALL_ENVIRONMENTS = [*SITES, "generic"]

# Extras that are not variants, and why.
NOT_VARIANTS = {
    "all": "a convenience bundle of other extras",
    "test": "test tooling, Spack's type='test' dependencies",
    "mpich": "PyPI's MPI for laptops; Spack uses the site's MPI through the virtual 'mpi'",
    "bench": "benchmark comparisons (lazy-object-proxy); Spack installs no benchmarks",
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


def recipe(path: Path = RECIPE) -> dict[str, Any]:
    tree = ast.parse(path.read_text())
    versions: list[dict[str, Any]] = []
    variants: dict[str, Any] = {}
    deps: list[dict[str, Any]] = []

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
                    versions.append(
                        {"name": const(call.args[0])} | {k: const(v) for k, v in kwargs.items()}
                    )
                elif fn == "variant":
                    variants[const(call.args[0])] = const(kwargs["default"])
                elif fn == "depends_on":
                    kind = kwargs.get("type")
                    types = (
                        [const(e) for e in kind.elts]
                        if isinstance(kind, ast.Tuple)
                        else [const(kind)]
                        if kind is not None
                        else ["build", "link"]
                    )
                    deps.append({"spec": const(call.args[0]), "when": when, "type": types})

    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    visit(cls.body, None)
    return {"versions": versions, "variants": variants, "deps": deps, "tree": tree}


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def find(deps: list[dict[str, Any]], name: str, when: str | None) -> dict[str, Any] | None:
    for d in deps:
        if d["spec"].split("@")[0].split()[0] == name and d["when"] == when:
            return d
    return None


def environment(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ENVIRONMENTS / name / "spack.yaml").read_text())
    assert isinstance(data, dict)
    return dict(data["spack"])


# --- the recipes, read as Spack 1.x reads them ------------------------------------------


def test_repository_has_the_spack_1_layout() -> None:
    """``spack repo create`` layout: spack_repo/<namespace>/repo.yaml, module-named dirs."""
    repo = yaml.safe_load((SPACK_REPO / "repo.yaml").read_text())["repo"]
    assert repo["namespace"] == SPACK_REPO.name == "warpstore"
    assert re.fullmatch(r"v2\.\d+", repo["api"])
    assert not (REPO / "spack" / "repo.yaml").exists()  # the legacy layout is gone
    for pkg in PACKAGES.iterdir():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", pkg.name), f"{pkg.name}: not a module name"
        assert (pkg / "package.py").is_file()


@pytest.mark.parametrize("package", sorted(p.name for p in PACKAGES.iterdir()))
def test_recipes_import_like_builtin(package: str) -> None:
    """Build system from spack_repo.builtin first, then spack.package; nothing hidden."""
    path = PACKAGES / package / "package.py"
    tree = ast.parse(path.read_text())
    imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert imports, package
    first, last = imports[0], imports[-1]
    assert isinstance(first, ast.ImportFrom) and first.module is not None
    assert first.module.startswith("spack_repo.builtin.build_systems.")
    assert isinstance(last, ast.ImportFrom) and last.module == "spack.package"
    assert not any(isinstance(n, ast.Try) for n in ast.walk(tree)), "no try/except imports"
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    # py_warpstore -> PyWarpstore, as Spack derives class names from package names
    assert classes == ["".join(p.capitalize() for p in package.split("_"))]


@pytest.mark.parametrize("package", sorted(p.name for p in PACKAGES.iterdir()))
def test_every_version_can_be_fetched_or_is_external_only(package: str) -> None:
    """A sha256, a branch, or (for has_code = False recipes) nothing to fetch at all."""
    path = PACKAGES / package / "package.py"
    r = recipe(path)
    external_only = "has_code = False" in path.read_text()
    assert r["versions"], package
    for v in r["versions"]:
        if external_only:
            assert set(v) == {"name"}, (package, v)
        else:
            assert "sha256" in v or "branch" in v, (package, v)
            if "sha256" in v:
                assert re.fullmatch(r"[0-9a-f]{64}", v["sha256"]), (package, v)
            assert "tag" not in v or "commit" in v, f"{package}: tag-only version {v}"


def test_warpstore_versions_are_develop_only() -> None:
    """No release exists: `develop` from main; a release adds version() with a sha256."""
    assert recipe()["versions"] == [{"name": "develop", "branch": "main"}]


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
    # pydaos comes with the site's DAOS, never from builtin's daos (no Python bindings)
    assert find(r["deps"], "daos", "+daos") is None


def test_recipe_runs_on_nothing_pyproject_does_not_require(pyproject: dict[str, Any]) -> None:
    """The other direction: every unconditional run dependency is a runtime requirement.

    A dependency dropped from pyproject.toml (lazy-object-proxy became the benchmark-only
    [bench] extra) must leave the recipe too, or every Spack user still builds it.
    """
    required = {spack_name(req)[0] for req in pyproject["project"]["dependencies"]}
    for dep in recipe()["deps"]:
        name = dep["spec"].split("@")[0].split()[0]
        if dep["when"] is None and "run" in dep["type"] and name != "python":
            assert name in required, f"package.py depends on {name}; pyproject.toml does not"


def test_runtime_imports_without_the_benchmark_extra() -> None:
    """Every warpstore module imports with lazy_object_proxy absent ([bench] only)."""
    code = (
        "import sys, pkgutil, importlib, warpstore\n"
        "sys.modules['lazy_object_proxy'] = None  # import now raises ImportError\n"
        "bad = []\n"
        "for m in pkgutil.walk_packages(warpstore.__path__, 'warpstore.'):\n"
        "    try:\n"
        "        importlib.import_module(m.name)\n"
        "    except ImportError as e:\n"
        "        if 'lazy_object_proxy' in str(e):\n"
        "            bad.append(m.name)\n"
        "print(bad)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


@pytest.mark.parametrize("name", ALL_ENVIRONMENTS)
def test_environment_names_this_repository_and_checkout(name: str) -> None:
    env = environment(name)
    here = ENVIRONMENTS / name
    assert (here / env["repos"]["warpstore"]).resolve() == SPACK_REPO
    develop = env["develop"]["py-warpstore"]
    assert (here / develop["path"]).resolve() == REPO
    assert develop["spec"] == "py-warpstore@develop"
    variants = recipe()["variants"]
    (spec,) = [s for s in env["specs"] if s.startswith("py-warpstore")]
    for token in spec.split()[1:]:
        assert token[0] in "+~" and token[1:] in variants, f"{name}: unknown variant {token}"
    if "+margo" in spec:
        assert "mochi" in env["repos"], f"{name}: +margo needs Mochi's repository"
    # compilers are packages with extra_attributes.compilers; no all-package compiler pin
    assert "compilers" not in env
    assert not any("%" in r for r in env["packages"].get("all", {}).get("require", []))


@pytest.mark.parametrize("site", SITES)
def test_site_environments_use_the_system_stack(site: str) -> None:
    env = environment(site)
    packages = env["packages"]
    mpi = "mpich" if site == "aurora" else "cray-mpich"
    assert packages[mpi]["buildable"] is False and packages[mpi]["externals"]
    if mpi == "cray-mpich":
        assert packages["cray-pmi"]["buildable"] is False
    assert packages["libfabric"]["buildable"] is False
    assert "fabrics=cxi" in packages["libfabric"]["externals"][0]["spec"]
    compilers = [
        e
        for pkg in packages.values()
        for e in pkg.get("externals", [])
        if "compilers" in e.get("extra_attributes", {})
    ]
    assert compilers, f"{site}: no compiler declared as an external"
    assert {"c", "cxx"} <= set(compilers[0]["extra_attributes"]["compilers"])
    if "+daos" in env["specs"][0]:
        assert packages["py-pydaos"]["buildable"] is False


# --- a real Spack -----------------------------------------------------------------------


def find_spack() -> list[str] | None:
    """``spack`` from PATH, else the offline Spack next to the checkout (CI: ../shared)."""
    exe = shutil.which("spack")
    if exe:
        return [exe]
    for parent in REPO.parents:
        offline = parent / "shared" / "tools" / "spack" / "spack-offline"
        if offline.is_file() and os.access(offline, os.X_OK):
            return [str(offline)]
    return None


@dataclass
class Run:
    """One Spack job: its commands' combined output, exit status and duration."""

    returncode: int
    output: str
    seconds: float
    directory: Path | None = None  # the environment it created, if any


@dataclass
class Spack:
    command: list[str]
    env: dict[str, str]
    scope: Path  # a configuration scope given to every command (-C): the repositories

    def run(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, "-C", str(self.scope), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )

    def job(self, *commands: list[str], directory: Path | None = None) -> Run:
        """Run commands in order, stopping at the first failure."""
        start = time.monotonic()
        output = []
        for args in commands:
            proc = self.run(*args)
            output.append(f"$ spack {' '.join(args)}\n{proc.stdout}")
            if proc.returncode != 0:
                return Run(proc.returncode, "".join(output), time.monotonic() - start, directory)
        return Run(0, "".join(output), time.monotonic() - start, directory)


def variant_specs() -> dict[str, str]:
    variants = recipe()["variants"]
    return {
        "default": "py-warpstore",
        "all-on": "py-warpstore " + " ".join(f"+{v}" for v in variants),
        "all-off": "py-warpstore " + " ".join(f"~{v}" for v in variants),
    }


# What `spack install` of py-warpstore ~numpy ~mpi ~zmq needs, all taken from this test's
# own Python as externals, so nothing is downloaded or compiled: Spack builds the wheel of
# the checkout with hatchling and installs it into a scratch install tree.
INSTALL_EXTERNALS = {
    "py-pip": "pip",
    "py-wheel": "wheel",
    "py-hatchling": "hatchling",
    "py-click": "click",
    "py-cloudpickle": "cloudpickle",
    "py-jinja2": "jinja2",
    "py-pyyaml": "pyyaml",
    "py-typing-extensions": "typing-extensions",
    # the wire protocol's AES-GCM; builtin's recipe would build Rust and OpenSSL
    "py-cryptography": "cryptography",
}


def install_environment(home: Path) -> Path | None:
    """A scratch environment installing a copy of the checkout with every dependency external.

    None where this Python lacks a build or runtime dependency (the test then skips).
    """
    try:
        versions = {pkg: metadata.version(dist) for pkg, dist in INSTALL_EXTERNALS.items()}
    except metadata.PackageNotFoundError:
        return None
    source = home / "source"  # a copy: Spack writes its build logs into a develop path
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    prefix = sys.prefix  # a venv is what Spack's python-venv is, too
    py = ".".join(map(str, sys.version_info[:3]))
    packages: dict[str, Any] = {
        name: {"buildable": False, "externals": [{"spec": f"{name}@{v}", "prefix": prefix}]}
        for name, v in versions.items()
    }
    packages["python"] = {
        "buildable": False,
        "externals": [{"spec": f"python@{py}", "prefix": sys.base_prefix}],
    }
    packages["python-venv"] = {
        "buildable": False,
        "externals": [{"spec": "python-venv@1.0", "prefix": prefix}],
    }
    env = home / "install"
    env.mkdir()
    manifest = {
        "spack": {
            "specs": ["py-warpstore@develop ~numpy ~mpi ~zmq"],
            "view": False,
            "concretizer": {"unify": True, "reuse": False},
            "config": {"install_tree": {"root": str(home / "opt")}},
            "develop": {"py-warpstore": {"spec": "py-warpstore@develop", "path": str(source)}},
            "packages": packages,
        }
    }
    (env / "spack.yaml").write_text(yaml.safe_dump(manifest))
    return env


@pytest.fixture(scope="session")
def spack_runs() -> Iterator[dict[str, Run]]:
    """Every Spack job of this module, run once, two at a time (a solve is single-threaded).

    Jobs: the audit; ``spack spec`` of the default variants, of every variant on and of
    every variant off; each environment, created with ``spack env create -d`` as the
    README says, then ``concretize -f``; the install from a copy of the checkout.
    """
    command = find_spack()
    if command is None:
        why = "no `spack` on PATH and no ../shared/tools/spack/spack-offline"
        if os.environ.get("WARPSTORE_REQUIRE_SPACK") == "1":
            pytest.fail(f"Spack is required here (WARPSTORE_REQUIRE_SPACK=1) but {why}")
        pytest.skip(why)
    # its own directory, not pytest's rotating basetemp: the batch outlives other sessions
    home = Path(tempfile.mkdtemp(prefix="warpstore-spack-"))
    try:
        yield run_spack_jobs(command, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_spack_jobs(command: list[str], home: Path) -> dict[str, Run]:
    env = dict(os.environ)
    repos = {"warpstore": str(SPACK_REPO)}
    if command[0].endswith("spack-offline"):
        # the offline Spack's own state, and Mochi's repository from its tarball: the
        # environments name Mochi's git repository, which cannot be cloned offline
        env["SPACK_OFFLINE_HOME"] = str(home / "offline")
        repos["mochi"] = str(home / "offline" / "mochi-spack-packages" / "spack_repo" / "mochi")
    else:  # a user's Spack: keep its configuration and caches untouched
        env["SPACK_USER_CONFIG_PATH"] = str(home / "user")
        env["SPACK_USER_CACHE_PATH"] = str(home / "cache")
    scope = home / "scope"
    scope.mkdir()
    (scope / "repos.yaml").write_text(yaml.safe_dump({"repos": repos}))
    spack = Spack(command, env, scope)

    packages = sorted(p.name.replace("_", "-") for p in PACKAGES.iterdir())
    audit = ["audit", "packages", *packages]
    jobs: dict[str, tuple[list[list[str]], Path | None]] = {
        f"spec:{name}": ([["spec", "--json", spec]], None) for name, spec in variant_specs().items()
    }
    for name in ALL_ENVIRONMENTS:
        target = home / "environments" / name
        create = [
            "env",
            "create",
            "--without-view",
            "-d",
            str(target),
            str(ENVIRONMENTS / name / "spack.yaml"),
        ]
        jobs[f"env:{name}"] = ([create, ["-e", str(target), "concretize", "-f"]], target)
    install = install_environment(home)
    if install is not None:
        jobs["install"] = (
            [
                ["-e", str(install), "install", "--fail-fast"],
                ["-e", str(install), "load", "--sh", "py-warpstore"],
            ],
            install,
        )

    with open("/tmp/warpstore-spack.lock", "a") as lock:  # heavy: one Spack batch at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        # alone first: the offline Spack unpacks itself, and Spack indexes the repositories
        # into its caches, which concurrent first runs would race to write
        runs = {"audit": spack.job(audit)}
        warm = spack.run("providers", "mpi")  # builds the provider index
        assert warm.returncode == 0, warm.stdout
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                k: pool.submit(spack.job, *cmds, directory=d) for k, (cmds, d) in jobs.items()
            }
            runs |= {k: f.result() for k, f in futures.items()}
    timings = ", ".join(f"{k} {r.seconds:.0f}s" for k, r in runs.items())
    print(f"\nspack jobs (2 at a time): {timings}")
    return runs


# The first test to use spack_runs runs every Spack job (about 8 minutes on two idle cores).
SPACK_TIMEOUT = pytest.mark.timeout(3600)


def succeeded(run: Run) -> str:
    assert run.returncode == 0, run.output[-6000:]
    return run.output


def concrete_specs(directory: Path) -> list[dict[str, Any]]:
    lock = json.loads((directory / "spack.lock").read_text())
    return list(lock["concrete_specs"].values())


def named(specs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in specs if s["name"] == name]


@SPACK_TIMEOUT
def test_audit_is_clean(spack_runs: dict[str, Run]) -> None:
    out = succeeded(spack_runs["audit"])
    assert "issue" not in out.lower() and "error" not in out.lower(), out
    assert out.count("passed") >= 4, out


def spec_nodes(run: Run) -> list[dict[str, Any]]:
    """The nodes of ``spack spec --json``'s output (after the command line we echo)."""
    out = succeeded(run)
    data, _ = json.JSONDecoder().raw_decode(out[out.index("{") :])  # warnings may follow
    return list(data["spec"]["nodes"])


@SPACK_TIMEOUT
@pytest.mark.parametrize("setting", ["default", "all-on", "all-off"])
def test_every_variant_concretizes(spack_runs: dict[str, Run], setting: str) -> None:
    nodes = spec_nodes(spack_runs[f"spec:{setting}"])
    (root,) = named(nodes, "py-warpstore")
    variants = recipe()["variants"]
    wanted = {
        "default": variants,
        "all-on": dict.fromkeys(variants, True),
        "all-off": dict.fromkeys(variants, False),
    }[setting]
    assert {v: root["parameters"][v] for v in variants} == wanted
    # a benchmark-only extra ([bench]): py-warpstore does not depend on it
    assert "py-lazy-object-proxy" not in {d["name"] for d in root["dependencies"]}
    if setting == "all-on":
        # what builtin lacks comes from this repository, pymargo from Mochi's
        for name in ("py-aiortc", "py-ucxx", "py-pydaos", "libsrtp"):
            assert {s["namespace"] for s in named(nodes, name)} == {"warpstore"}, name
        assert {s["namespace"] for s in named(nodes, "py-mochi-margo")} == {"mochi"}
        assert not named(nodes, "daos")  # pydaos comes with the site's DAOS
    if setting == "all-off":
        assert not named(nodes, "py-numpy") and not named(nodes, "py-pyzmq")


@SPACK_TIMEOUT
@pytest.mark.parametrize("name", ALL_ENVIRONMENTS)
def test_environment_concretizes_as_the_readme_creates_it(
    spack_runs: dict[str, Run], name: str
) -> None:
    run = spack_runs[f"env:{name}"]
    succeeded(run)
    assert run.directory is not None
    created = yaml.safe_load((run.directory / "spack.yaml").read_text())["spack"]
    # `spack env create` made the relative paths absolute: they still name this checkout
    assert Path(created["develop"]["py-warpstore"]["path"]) == REPO
    assert Path(created["repos"]["warpstore"]) == SPACK_REPO
    specs = concrete_specs(run.directory)
    (root,) = named(specs, "py-warpstore")
    assert root["version"] == "develop"
    assert Path(root["parameters"]["dev_path"]) == REPO  # builds the user's code
    if name in SITES:
        externals = {s["name"] for s in specs if "external" in s}
        mpi = "mpich" if name == "aurora" else "cray-mpich"
        assert {mpi, "libfabric"} <= externals, (name, externals)
        if name == "aurora":
            assert "py-pydaos" in externals
        # nothing rejected the externals: the MPI the site provides is the one used
        assert not any(s["name"] in {"openmpi", "mpich"} - {mpi} for s in specs)


@SPACK_TIMEOUT
def test_install_from_the_checkout_then_load_and_import(spack_runs: dict[str, Run]) -> None:
    """`spack install` builds this checkout's wheel; `spack load` makes it importable."""
    if "install" not in spack_runs:
        pytest.skip(f"this Python lacks one of {sorted(set(INSTALL_EXTERNALS.values()))}")
    run = spack_runs["install"]
    out = succeeded(run)
    assert run.directory is not None
    load = out.split("$ spack -e " + str(run.directory) + " load --sh py-warpstore\n", 1)[1]
    root = run.directory.parent / "opt"
    probe = subprocess.run(
        [
            "bash",
            "-c",
            f'{load}\n"$0" -c "import warpstore; print(warpstore.__file__)"',
            sys.executable,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=run.directory,
    )
    assert probe.returncode == 0, probe.stderr
    # imported from Spack's install tree, not from this checkout's editable install
    assert Path(probe.stdout.strip()).is_relative_to(root), probe.stdout
