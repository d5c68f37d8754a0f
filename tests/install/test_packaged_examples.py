"""The default sandbox cluster and example pods ship inside the hami wheel (hami/sandbox/examples) so
`hami sandbox` works from any install; deploy/examples is the human-readable copy people edit. One
source of truth: the two directories hold the same files, byte for byte (`make examples` copies
deploy/examples over the packaged copy)."""

from __future__ import annotations

import filecmp
from pathlib import Path

from hami.sandbox import defaults

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "examples"
PACKAGED = REPO / "core" / "hami" / "sandbox" / "examples"


def differences(left: Path, right: Path) -> list[str]:
    """What differs between two flat directories of YAML files, one line per file, empty when equal."""
    names_left = {p.name for p in left.glob("*.yaml")}
    names_right = {p.name for p in right.glob("*.yaml")}
    problems = [f"{name}: only in {left}" for name in sorted(names_left - names_right)]
    problems += [f"{name}: only in {right}" for name in sorted(names_right - names_left)]
    same = {name for name in names_left & names_right if filecmp.cmp(left / name, right / name, shallow=False)}
    problems += [f"{name}: differs" for name in sorted(names_left & names_right - same)]
    return problems


def test_the_packaged_examples_are_deploy_examples() -> None:
    assert not differences(DEPLOY, PACKAGED), "deploy/examples and core/hami/sandbox/examples differ; run `make examples`"
    assert (PACKAGED / "nodes.yaml").is_file()
    # every example folder ships too: quickstart (issue 27) for `hami sandbox --pods <packaged>/quickstart/*.yaml`,
    # dra (issue 24) for `hami sandbox --dra`, mig (issue 18) for the partition metrics
    folders = sorted(p.name for p in DEPLOY.iterdir() if p.is_dir())
    assert {"quickstart", "dra", "mig"} <= set(folders)
    assert folders == sorted(p.name for p in PACKAGED.iterdir() if p.is_dir() and p.name != "__pycache__")
    for folder in folders:
        assert sorted((DEPLOY / folder).glob("*.yaml")), folder
        assert not differences(DEPLOY / folder, PACKAGED / folder), (
            f"deploy/examples/{folder} differs from its packaged copy; run `make examples`"
        )


def test_the_comparison_notices_an_extra_a_missing_and_a_changed_file(tmp_path: Path) -> None:
    left, right = tmp_path / "l", tmp_path / "r"
    left.mkdir()
    right.mkdir()
    for directory, changed in ((left, "a: 1\n"), (right, "a: 2\n")):
        (directory / "same.yaml").write_text("a: 1\n")
        (directory / "changed.yaml").write_text(changed)
    (left / "extra.yaml").write_text("x: 1\n")
    (right / "other.yaml").write_text("y: 1\n")
    assert differences(left, right) == [f"extra.yaml: only in {left}", f"other.yaml: only in {right}", "changed.yaml: differs"]


def test_the_sandbox_finds_its_defaults_in_the_package_not_the_checkout() -> None:
    directory = defaults.examples_dir()
    assert directory is not None and directory.resolve() == PACKAGED.resolve()
    assert defaults.default_nodes_file().name == "nodes.yaml"
    pods = defaults.example_pod_files()
    assert [p.name for p in pods] == sorted(p.name for p in DEPLOY.glob("*.yaml") if not p.name.startswith("nodes"))
