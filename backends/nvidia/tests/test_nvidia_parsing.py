"""Parsers and pure helpers: pod selectors, pair-score annotations, set choice, config (hypothesis)."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hami.sdk import (
    BackendError,
    Grant,
    PhysicalDevice,
    RequestError,
    SchedulableDevice,
)
from hami_nvidia import topology
from hami_nvidia.selectors import Selectors
from hami_nvidia.settings import exclusion, node_config, selected

KEYS = [
    "nvidia.com/use-gputype",
    "nvidia.com/nouse-gputype",
    "nvidia.com/use-gpuuuid",
    "nvidia.com/nouse-gpuuuid",
    "nvidia.com/numa-bind",
    "nvidia.com/vgpu-mode",
    "other",
]
values = st.one_of(st.text(max_size=20), st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_selector_parsing_never_crashes(annotations):
    try:
        selectors = Selectors.from_pod({"metadata": {"annotations": annotations}})
    except RequestError as exc:
        assert any(k in str(exc) for k in KEYS)
        return
    device = SchedulableDevice(id="GPU-x", vendor="NVIDIA", type="NVIDIA A100", count=1, memory=1)
    assert selectors.reason(device) in (None, "CardTypeMismatch", "CardUuidMismatch", "ModeNotFit")


words = st.text(alphabet="abcAB0 -", min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(device_type=words, wanted=st.lists(words, min_size=1, max_size=3))
def test_type_selection_is_a_case_insensitive_substring_match(device_type, wanted):
    device = SchedulableDevice(id="GPU-x", vendor="NVIDIA", type=device_type, count=1, memory=1)
    use = Selectors.from_pod({"metadata": {"annotations": {"nvidia.com/use-gputype": ",".join(wanted)}}})
    nouse = Selectors.from_pod({"metadata": {"annotations": {"nvidia.com/nouse-gputype": ",".join(wanted)}}})
    matches = any(w.strip() and w.strip().lower() in device_type.lower() for w in wanted)
    given_any = any(w.strip() for w in wanted)
    assert (use.reason(device) is None) == (matches or not given_any)
    assert (nouse.reason(device) is None) == (not matches)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_score_annotation_decoding_never_crashes(text):
    assert isinstance(topology.decode_scores(text), dict)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["GPU-0", "GPU-1", "GPU-2", "GPU-3"]), st.integers(0, 2000), min_size=1))
def test_score_annotation_round_trips(scores):
    devices = [
        PhysicalDevice(id=i, vendor="NVIDIA", type="t", memory=1, attributes={"pair_scores": {p: s for p, s in scores.items() if p != i}})
        for i in ("GPU-0", "GPU-1", "GPU-2", "GPU-3")
    ]
    text = topology.encode_scores(devices)
    if text is None:
        assert not any(d.attributes["pair_scores"] for d in devices)
        return
    decoded = topology.decode_scores(text)
    for d in devices:
        if d.attributes["pair_scores"]:
            assert decoded[d.id] == d.attributes["pair_scores"]


def test_hamis_own_annotation_reads(text='[{"uuid":"GPU-a","score":{"GPU-b":220,"GPU-c":10}},{"uuid":"GPU-b","score":{"GPU-a":220}}]'):
    assert topology.decode_scores(text) == {"GPU-a": {"GPU-b": 220, "GPU-c": 10}, "GPU-b": {"GPU-a": 220}}
    assert topology.decode_scores('{"uuid": 1}') == {} and topology.decode_scores('[{"uuid": 3}]') == {}


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 7), count=st.integers(2, 4), data=st.data())
def test_best_set_is_the_highest_scoring_set(n, count, data):
    ids = [f"G{i}" for i in range(n)]
    scores = {a: {} for a in ids}
    for a, b in itertools.combinations(ids, 2):
        scores[a][b] = scores[b][a] = data.draw(st.integers(0, 500))
    chosen = topology.best_set(ids, count, scores)
    if count > n:
        assert chosen is None
        return
    assert len(set(chosen)) == count and set(chosen) <= set(ids)
    best = max(topology.set_score(scores, list(c)) for c in itertools.combinations(ids, count))
    assert topology.set_score(scores, chosen) == best


def test_large_candidate_sets_use_the_greedy_choice():
    ids = [f"G{i}" for i in range(16)]
    scores = {a: {b: (500 if {a, b} <= {"G3", "G7", "G9", "G12"} else 10) for b in ids if b != a} for a in ids}
    assert sorted(topology.best_set(ids, 4, scores)) == ["G12", "G3", "G7", "G9"]  # C(16, 8) would be exhaustive-heavy; 4 of 16 is not
    eight = topology.best_set(ids, 8, scores)
    assert {"G3", "G7", "G9", "G12"} <= set(eight) and len(eight) == 8


def test_node_overrides_and_filters():
    config = {"split_count": 10, "include": [], "exclude": ["GPU-9"], "nodes": {"a": {"split_count": 2, "include": [0, "GPU-5"]}}}
    assert node_config(config, "a")["split_count"] == 2 and node_config(config, "b")["split_count"] == 10
    assert selected(node_config(config, "a"), "GPU-1", 0) and selected(node_config(config, "a"), "GPU-5", 3)
    assert not selected(node_config(config, "a"), "GPU-2", 2) and not selected(node_config(config, "a"), "GPU-9", 0)
    assert selected(node_config(config, "b"), "GPU-2", 2) and not selected(config, "GPU-9", 1)
    with pytest.raises(BackendError, match=r"nodes\['a'\] sets \['hook_path'\]"):
        node_config({"nodes": {"a": {"hook_path": "/opt"}}}, "a")
    with pytest.raises(BackendError, match="include=True"):
        selected({"include": True}, "GPU-0", 0)


def test_exclusions_name_the_config_key_that_drops_a_gpu():
    config = {"exclude": ["GPU-9"], "filterdevices": {"index": [4]}, "nodes": {"a": {"exclude": [1]}}}
    assert exclusion(config, "GPU-9", 0, "b") == "excluded by config key exclude=['GPU-9']"
    assert exclusion(config, "GPU-9", 0, "a") == ""  # the node's own list replaces the top level's
    assert exclusion(config, "GPU-2", 1, "a") == "excluded by config key nodes.a.exclude=['1']"
    assert exclusion(config, "GPU-4", 4, "a") == "excluded by config key filterdevices={'uuid': [], 'index': [4]}"
    assert exclusion(config, "GPU-5", 5, "a") == "" and selected(node_config(config, "a"), "GPU-5", 5)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("GPU-1", "filterdevices='GPU-1'"),
        ({"uuids": ["GPU-1"]}, "filterdevices={'uuids'"),
        ({"uuid": "GPU-1"}, "filterdevices.uuid='GPU-1'"),
        ({"index": [-1]}, r"filterdevices.index=\[-1\]"),
        ({"index": ["0"]}, r"filterdevices.index=\['0'\]"),
    ],
)
def test_a_bad_filterdevices_is_an_error_naming_it(value, named):
    with pytest.raises(BackendError, match=named):
        exclusion({"filterdevices": value}, "GPU-0", 0)


@pytest.mark.parametrize(
    ("key", "value"), [("mode", "turbo"), ("device_list_strategy", "volume-mounts"), ("split_count", 0), ("memory_scaling", "2")]
)
def test_bad_config_is_a_backend_error_naming_the_value(nvidia, tmp_path, key, value):
    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(json.dumps({"nodes": [{"name": "n", "devices": [{"vendor": "NVIDIA", "type": "T", "memory": 100}]}]}))
    manager = nvidia(inventory=str(inventory), **{key: value}, host_root=str(tmp_path))
    (device,) = manager.discover("nvidia", "n")
    with pytest.raises(BackendError, match=re.escape(f"{key}={value!r}")):
        manager.split(device)
        pod = {"metadata": {"uid": "u", "annotations": {"nvidia.com/vgpu-mode": "none"}}}
        manager.container_edits([Grant(device.id, "NVIDIA", 10)], pod, {"name": "c"})
