"""Issue 25 (one odd entry never fails discovery): a GPU whose ``Product Name`` is blank (``" "``) gave
``PhysicalDevice.type=' '``, a ValidationError that failed the whole discovery (no caller catches it).
It is now named ``MTT GPU`` and the others are kept. Built from the documented recording."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from hami.sdk import NodeContext
from hami_mthreads import plugin as mt


def test_a_blank_product_name_keeps_every_gpu(fake_tools, read_recording, tmp_path):
    data = json.loads(read_recording("mthreads-gmi_q_json_documented.txt"))
    data["GPU"][1]["Product Name"] = "  "
    edited = tmp_path / "gmi.json"
    edited.write_text("# source: test edit\n# ---\n" + json.dumps(data))
    fake_tools.install("mthreads-gmi", {"-q --json": str(edited)})
    devices = mt.discover(mt.INFO.default_config, NodeContext("mt1"))
    assert [(d.index, d.type, d.memory, d.advertised) for d in devices] == [(0, "MTT S4000", 49152, True), (1, "MTT GPU", 49152, True)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=4), st.integers(), st.booleans()), min_size=1, max_size=4))
def test_any_product_name_gives_a_named_gpu(names):
    rows = mt.parse(json.dumps({"GPU": [{"Index": str(i), "Product Name": n} for i, n in enumerate(names)]}))
    assert [r[0] for r in rows] == list(range(len(names))) and all(r[1].strip() for r in rows)
