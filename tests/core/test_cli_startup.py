"""``hami --help`` and every ``hami <cmd> --help`` answer without importing the heavy parts.

Timing is measured by ``bench/cli.py`` (no wall-clock asserts here); these tests check the cause of
a slow start instead: which modules a fresh interpreter has loaded after printing the help.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from hami.cli import COMMANDS, DEV_COMMANDS, LazyCommand, LazyGroup, cli, quiet_grpc

HEAVY_PACKAGES = {
    "kubernetes",
    "grpc",
    "numpy",
    "matplotlib",
    "prometheus_client",
    "jsonschema",
    "urllib3",
    "rich",
    "yaml",
    "cryptography",
    "pytest",
    "hypothesis",
    "google",
}
ALWAYS = {"hami", "hami.plugin", "hami.errors", "hami.cli"}
# Modules of constants a command's options need for their defaults (each imports only attrs/click).
LIGHT = {
    "scheduler": {"hami.scheduler.config"},
    "scheduler-config": {"hami.scheduler.config"},
    "webhook": {"hami.webhook.config"},
    "agent": {"hami.node.deviceplugin"},
    "devices": {"hami.node.deviceplugin"},
}

PROBE = """
import json, sys
sys.argv = ["hami", *json.loads(sys.argv[1])]
from hami.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stderr.write("MODULES=" + json.dumps({"code": code, "modules": sorted(sys.modules)}) + "\\n")
"""


def help_modules(*args: str) -> tuple[str, set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMI_")}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([*args, "--help"])], capture_output=True, text=True, env=env, timeout=60)
    line = next((x for x in done.stderr.splitlines() if x.startswith("MODULES=")), None)
    assert line is not None, done.stderr
    report = json.loads(line.removeprefix("MODULES="))
    assert report["code"] in (0, None), done.stderr
    return done.stdout, set(report["modules"])


def lineage(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


def check_light(modules: set[str], allowed_hami: set[str]) -> None:
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY_PACKAGES)
    assert not heavy, f"imported for --help: {heavy[:10]}"
    extra = sorted(m for m in modules if m.split(".")[0] in ("hami",) and m not in allowed_hami)
    assert not extra, f"hami modules imported for --help: {extra}"
    backends = sorted(m for m in modules if m.startswith("hami_"))
    assert not backends, f"backends loaded for --help: {backends}"


def test_top_level_help_lists_every_command_and_imports_no_command():
    out, modules = help_modules()
    check_light(modules, ALWAYS)
    listed = {line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == {*COMMANDS, "backends", "dev"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help_imports_only_its_own_module(name):
    out, modules = help_modules(name)
    assert f"Usage: hami {name}" in out
    check_light(modules, ALWAYS | lineage(COMMANDS[name].target.partition(":")[0]) | LIGHT.get(name, set()))


def test_dev_apiserver_help_is_light_and_listed():
    out, modules = help_modules("dev")
    assert "apiserver" in out
    check_light(modules, ALWAYS)
    out, modules = help_modules("dev", "apiserver")
    assert "--kubeconfig" in out
    check_light(modules, ALWAYS | lineage("hami.fakes.cli"))


@pytest.mark.parametrize(("group", "table"), [(cli, COMMANDS), (cli.commands["dev"], DEV_COMMANDS)], ids=["hami", "dev"])
def test_listed_help_is_the_commands_own(group, table):
    """The one-liners kept in hami.cli (shown without importing) match each command's docstring."""
    for name, lazy in table.items():
        command = lazy.load(name)
        for limit in (45, 80, 1000):
            assert click.Command(name, help=lazy.help).get_short_help_str(limit) == command.get_short_help_str(limit), name


def test_a_command_that_cannot_import_says_so_and_stays_listed():
    group = LazyGroup("g", lazy={"broken": LazyCommand("hami.no_such_module_xyz:command", "Does something.")})
    runner = CliRunner()
    listing = runner.invoke(group, ["--help"])
    assert "broken" in listing.output and "Does something." in listing.output
    result = runner.invoke(group, ["broken"])
    assert result.exit_code == 1
    assert "'hami broken' cannot start" in result.output and "hami.no_such_module_xyz" in result.output


@pytest.mark.parametrize(
    ("verbose", "environ", "expected"),
    [(0, {}, "NONE"), (0, {"GRPC_VERBOSITY": "DEBUG"}, "DEBUG"), (1, {}, None), (2, {"GRPC_VERBOSITY": "INFO"}, "INFO")],
)
def test_grpc_is_quiet_unless_asked(verbose, environ, expected):
    env = dict(environ)
    quiet_grpc(verbose, env)
    assert env.get("GRPC_VERBOSITY") == expected
