"""Runtime never imports test tools: every module of the hami core (all but the pytest plugin,
hami.testing) and of each backend package imports in a fresh interpreter where pytest and hypothesis
cannot be imported. The sandbox, `hami dev apiserver`, the node agent and the benches run from a plain
`pip install hami`, which has neither."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("pytest", "_pytest", "hypothesis")

CHECKER = textwrap.dedent(
    """
    import importlib, json, sys, traceback

    BLOCKED = set(sys.argv[1].split(","))

    class Block:
        '''A meta-path finder that makes the test tools look uninstalled.'''
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: runtime code must not import test tools", name=name)
            return None

    sys.meta_path.insert(0, Block())
    try:
        import pytest  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker does not work: pytest imported")
    failures = {}
    for module in json.loads(sys.stdin.read()):
        try:
            importlib.import_module(module)
        except BaseException as exc:
            failures[module] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    print(json.dumps(failures))
    """
)


def modules_under(root: Path, package: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Dotted names of every module of ``package`` (a directory under ``root``), from the files on disk,
    so a module nothing imports yet is checked too."""
    names = []
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if "__pycache__" in parts or parts[-1] == "__main__":
            continue
        name = ".".join(parts)
        if not any(name == s or name.startswith(s + ".") for s in skip):
            names.append(name)
    return names


def import_failures(modules: list[str], extra_path: tuple[Path, ...] = ()) -> dict[str, str]:
    """module → the error importing it raised, with pytest and hypothesis blocked."""
    env_path = [str(p) for p in extra_path]
    code = f"import sys; sys.path[:0] = {env_path!r}\n" + CHECKER
    done = subprocess.run(
        [sys.executable, "-c", code, ",".join(BLOCKED)],
        input=json.dumps(modules),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def runtime_modules() -> list[str]:
    modules = modules_under(REPO / "core", "hami", skip=("hami.testing",))
    for backend in sorted((REPO / "backends").glob("*/pyproject.toml")):
        for package in sorted(p for p in backend.parent.glob("hami_*") if p.is_dir() and not p.name.endswith(".egg-info")):
            modules += modules_under(backend.parent, package.name, skip=(f"{package.name}.tests",))
    return modules


def test_every_runtime_module_imports_without_pytest_or_hypothesis() -> None:
    modules = runtime_modules()
    assert "hami.fakes.kubeapi.server" in modules and "hami.sandbox.cluster" in modules and "hami_nvidia.plugin" in modules
    assert not any(m.startswith("hami.testing") for m in modules)
    failures = import_failures(modules)
    assert not failures, "these runtime modules need pytest/hypothesis (move the import into hami.testing):\n" + "\n".join(
        f"  {m}: {e}" for m, e in failures.items()
    )


def test_the_benches_import_without_pytest_or_hypothesis() -> None:
    benches = sorted(p.stem for p in (REPO / "bench").glob("*.py"))
    assert "extender" in benches
    failures = import_failures(benches, (REPO / "bench",))
    assert not failures, "bench scripts need pytest/hypothesis:\n" + "\n".join(f"  bench/{m}.py: {e}" for m, e in failures.items())


def test_the_check_names_a_module_that_imports_a_test_tool(tmp_path: Path) -> None:
    package = tmp_path / "leaky"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "clean.py").write_text("import json\n")
    (package / "uses_pytest.py").write_text("import pytest\n")
    (package / "uses_hypothesis.py").write_text("from hypothesis import strategies\n")
    modules = modules_under(tmp_path, "leaky")
    assert modules == ["leaky", "leaky.clean", "leaky.uses_hypothesis", "leaky.uses_pytest"]
    failures = import_failures(modules, (tmp_path,))
    assert set(failures) == {"leaky.uses_pytest", "leaky.uses_hypothesis"}
    assert "pytest is blocked" in failures["leaky.uses_pytest"]


def test_the_pytest_plugin_is_the_one_package_left_out() -> None:
    # hami.testing is the pytest plugin: it does import pytest, so the check above would catch it
    failures = import_failures(["hami.testing"])
    assert set(failures) == {"hami.testing"}
