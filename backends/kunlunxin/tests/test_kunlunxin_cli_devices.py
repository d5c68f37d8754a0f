"""Issue 25 end to end: the real ``hami devices`` (a subprocess, every installed backend, PATH holding only
a fake ``xpu-smi`` that prints the genuine P800 recording with XPU 3's memory line deleted, a test edit)
lists all eight XPUs, XPU 3 unadvertised with the reason naming xpu-smi and its line, and warns about
nothing (before, that one row failed the whole table with a WARNING and ``[]``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_hami_devices_lists_the_xpu_without_memory_and_keeps_the_others(tmp_path, read_recording):
    text = read_recording("xpu-smi_p800_x8.txt")
    line = "| N/A   39C  N/A     86W / 400W |    100MiB / 98304MiB |      0%      Default |\n"
    assert text.count(line) == 1, "the recording's XPU 3 memory line moved"
    output = tmp_path / "xpu-smi.out"
    output.write_text(text.replace(line, ""))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "xpu-smi"
    tool.write_text(f"#!/bin/sh\nexec /bin/cat '{output}'\n")
    tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMI_")}
    env.update(PATH=str(bin_dir), HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "hami.cli", "devices", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    xpus = [d for d in json.loads(done.stdout) if d["backend"] == "kunlunxin"]
    assert [d["index"] for d in xpus] == list(range(8))
    (bad,) = [d for d in xpus if not d["advertised"]]
    assert bad["id"] == "xpu-00000000-66-00.0"
    assert bad["reason"].startswith("memory unknown: xpu-smi printed no memory line for XPU 3 (P800 OAM) (line ")
    assert {d["memory_mib"] for d in xpus if d["advertised"]} == {98304}
    assert not [x for x in done.stderr.splitlines() if "WARNING" in x and "kunlunxin" in x], done.stderr
