"""AdmissionReview cases over real HTTP: every denial with its message, the seed's example pods with
their exact patch (applied with jsonpatch to the original pod), untouched pods, schedulers, operations."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from hami import hookimpl
from hami.plugin.model import ContainerPatch
from hami.webhook.config import WebhookConfig

GPUMEM = "nvidia.com/gpumem"


def _pod(
    limits: dict[str, Any] | None = None,
    *,
    name: str = "c",
    annotations: dict[str, str] | None = None,
    requests: dict[str, Any] | None = None,
    init: list[dict[str, Any]] | None = None,
    security: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": "cuda"}
    if security is not None:
        container["securityContext"] = security
    if limits is not None or requests is not None:
        container["resources"] = {k: v for k, v in (("limits", limits), ("requests", requests)) if v is not None}
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [container], **spec},
    }
    if annotations:
        pod["metadata"]["annotations"] = annotations
    if init:
        pod["spec"]["initContainers"] = init
    return pod


def _apply(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    original = copy.deepcopy(pod)
    mutated = jsonpatch.JsonPatch(response["_ops"]).apply(pod)
    assert pod == original, "applying the patch must not need the pod changed in place"
    return mutated


# ------------------------------------------------------------------ denials

DENIALS = [
    # forged system annotations (CREATE), on device pods and on plain pods alike
    pytest.param(
        _pod({GPUMEM: "3000"}, annotations={"hami.io/vgpu-devices-to-allocate": "GPU-a,NVIDIA,3000,0:;"}),
        ["hami.io/vgpu-devices-to-allocate", "only hami", "remove"],
        id="forged-to-allocate",
    ),
    pytest.param(
        _pod({GPUMEM: "3000"}, annotations={"hami.io/vgpu-devices-allocated": "GPU-a,NVIDIA,3000,0:;"}),
        ["hami.io/vgpu-devices-allocated"],
        id="forged-allocated",
    ),
    pytest.param(
        _pod({"nvidia.com/gpu": "1"}, annotations={"hami.io/bind-phase": "success"}), ["hami.io/bind-phase"], id="forged-bind-phase"
    ),
    pytest.param(
        _pod({"nvidia.com/gpu": "1"}, annotations={"hami.io/vgpu-node": "node-1", "hami.io/vgpu-time": "1"}),
        ["hami.io/vgpu-node, hami.io/vgpu-time"],
        id="forged-node-and-time",
    ),
    pytest.param(
        _pod({"nvidia.com/gpu": "1"}, annotations={"hami.io/allocation-signature": "abc"}),
        ["hami.io/allocation-signature"],
        id="forged-signature",
    ),
    pytest.param(_pod({"nvidia.com/gpu": "1"}, annotations={"hami.io/bind-time": "1"}), ["hami.io/bind-time"], id="forged-bind-time"),
    pytest.param(
        _pod({"cambricon.com/vmlu": "1"}, annotations={"hami.io/cambricon-mlu-devices-allocated": "x"}),
        ["hami.io/cambricon-mlu-devices-allocated"],
        id="forged-cambricon",
    ),
    pytest.param(
        _pod({"huawei.com/Ascend910B3": "1"}, annotations={"hami.io/Ascend910B3-devices-to-allocate": "x"}),
        ["hami.io/Ascend910B3-devices-to-allocate"],
        id="forged-ascend",
    ),
    pytest.param(
        _pod({"nvidia.com/gpu": "1"}, annotations={"hami.io/vgpu-devices-anything": "x"}),
        ["hami.io/vgpu-devices-anything"],
        id="forged-vgpu-prefix",
    ),
    pytest.param(
        _pod({"nvidia.com/gpu": "1"}, annotations={"hami.io/acme-devices-allocated": "x"}),
        ["hami.io/acme-devices-allocated"],
        id="forged-uninstalled-vendor",
    ),
    pytest.param(_pod(None, annotations={"hami.io/vgpu-node": "node-1"}), ["hami.io/vgpu-node"], id="forged-on-plain-pod"),
    # placement and isolation
    pytest.param(
        _pod({GPUMEM: "3000"}, nodeName="node-1"),
        ["spec.nodeName", "'node-1'", "container 'c'", GPUMEM, "hami-scheduler"],
        id="node-name-preset",
    ),
    pytest.param(
        _pod({"nvidia.com/gpu": "1"}, name="root", security={"privileged": True}),
        ["container 'root' is privileged", "nvidia.com/gpu"],
        id="privileged",
    ),
    pytest.param(
        _pod(None, init=[{"name": "setup", "securityContext": {"privileged": True}, "resources": {"limits": {"hygon.com/dcunum": "1"}}}]),
        ["container 'setup' is privileged", "hygon.com/dcunum"],
        id="privileged-init-container",
    ),
    # impossible requests
    # memory beside a percentage and cores over 100 are admitted with a warning (HAMi v2.10): tests/webhook/test_hami_request_compat.py
    pytest.param(
        _pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "150"}),
        ["nvidia.com/gpumem-percentage=150", "over 100", "container 'c'"],
        id="percentage-over-100",
    ),
    pytest.param(_pod({GPUMEM: "-1"}), ["nvidia.com/gpumem", "'-1'", "negative", "container 'c'"], id="negative-memory"),
    pytest.param(_pod({GPUMEM: "1.5"}), ["nvidia.com/gpumem", "'1.5'", "whole number"], id="fractional-memory"),
    pytest.param(_pod({GPUMEM: "500m"}), ["nvidia.com/gpumem", "'500m'", "whole number"], id="milli-memory"),
    pytest.param(_pod({GPUMEM: 1.5}), ["nvidia.com/gpumem", "1.5"], id="json-float"),
    pytest.param(_pod({GPUMEM: "lots"}), ["nvidia.com/gpumem", "'lots'", "not a Kubernetes quantity"], id="not-a-quantity"),
    pytest.param(_pod({"nvidia.com/gpu": "0", GPUMEM: "3000"}), ["nvidia.com/gpu=0", "memory"], id="count-zero-with-memory"),
    pytest.param(_pod({"nvidia.com/gpu": "-2"}), ["nvidia.com/gpu", "'-2'", "negative"], id="negative-count"),
    pytest.param(
        _pod({"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "-2000"}),
        ["huawei.com/Ascend910B3-memory", "negative"],
        id="ascend-negative-memory",
    ),
    pytest.param(
        _pod(None, init=[{"name": "warm", "resources": {"limits": {"hygon.com/dcucores": "2.5"}}}]),
        ["container 'warm'", "hygon.com/dcucores", "'2.5'"],
        id="init-container-request",
    ),
    pytest.param(_pod(None, requests={GPUMEM: "-5"}), ["nvidia.com/gpumem", "'-5'"], id="bad-value-in-requests"),
]


@pytest.mark.parametrize(("pod", "fragments"), DENIALS)
def test_denials_name_the_problem(webhook: Any, admit: Any, pod: dict[str, Any], fragments: list[str]) -> None:
    response = admit(webhook, pod)
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["reason"] == "Forbidden"
    assert "patch" not in response
    message = response["status"]["message"]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


MALFORMED = [
    pytest.param(
        {"metadata": {"name": "p"}, "spec": {"containers": "c"}}, "spec.containers must be a list, got string", id="containers-string"
    ),
    pytest.param(
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"limits": ["nvidia.com/gpu"]}}]}},
        "spec.containers[0].resources.limits must be an object, got array",
        id="limits-list",
    ),
    pytest.param({"metadata": {"name": "p"}, "spec": None}, "spec must be an object, got null", id="no-spec"),
    pytest.param(
        {"metadata": {"annotations": {"a": 1}}, "spec": {"containers": []}},
        "metadata.annotations must map strings to strings",
        id="annotation-int",
    ),
    pytest.param({"metadata": [], "spec": {"containers": []}}, "metadata must be an object, got array", id="metadata-list"),
    pytest.param({"spec": {"containers": [{"name": 5}]}}, "spec.containers[0].name must be a string, got number", id="name-number"),
    pytest.param({"spec": {"containers": [], "nodeName": ["n"]}}, "spec.nodeName must be a string, got array", id="node-name-list"),
    pytest.param("a pod", "request.object must be the pod being created, got string", id="object-string"),
]


@pytest.mark.parametrize(("pod", "fragment"), MALFORMED)
def test_malformed_pods_are_denied_as_bad_requests(webhook: Any, admit: Any, pod: Any, fragment: str) -> None:
    response = admit(webhook, pod)
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert fragment in response["status"]["message"]


# ------------------------------------------------------------------ the seed's examples

SCHED = {"op": "add", "path": "/spec/schedulerName", "value": "hami-scheduler"}

ADMITTED = [
    pytest.param(
        _pod({GPUMEM: "3000"}),
        [SCHED, {"op": "add", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu", "value": "1"}],
        {GPUMEM: "3000", "nvidia.com/gpu": "1"},
        id="gpumem-3000",
    ),
    pytest.param(
        _pod({"nvidia.com/gpucores": "50"}),
        [SCHED, {"op": "add", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu", "value": "1"}],
        {"nvidia.com/gpucores": "50", "nvidia.com/gpu": "1"},
        id="gpucores-50",
    ),
    pytest.param(
        _pod({"nvidia.com/gpu": "1", "nvidia.com/gpucores": "50", GPUMEM: "3000"}),
        [SCHED],
        {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "50", GPUMEM: "3000"},
        id="gpu-with-cores-and-memory",
    ),
    # a whole GPU without cores becomes exclusive (upstream pkg/device/nvidia/device.go defaultExclusiveCoreIfNeeded)
    pytest.param(
        _pod({"nvidia.com/gpu": "1"}, annotations={"nvidia.com/use-gputype": "A100,V100"}),
        [SCHED, {"op": "add", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpucores", "value": "100"}],
        {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "100"},
        id="use-gputype",
    ),
    pytest.param(
        _pod(
            {"nvidia.com/gpu": "2", "nvidia.com/gpumem-percentage": "50"},
            annotations={"nvidia.com/use-gpuuuid": "GPU-0fd0f6a1-0d4c-4a5e-9f7e-1c2d3e4f5a6b"},
        ),
        [SCHED],
        {"nvidia.com/gpu": "2", "nvidia.com/gpumem-percentage": "50"},
        id="use-gpuuuid",
    ),
    pytest.param(
        _pod({"cambricon.com/mlu.smlu.vmemory": "20", "cambricon.com/mlu.smlu.vcore": "10"}),
        [SCHED, {"op": "add", "path": "/spec/containers/0/resources/limits/cambricon.com~1vmlu", "value": "1"}],
        {"cambricon.com/mlu.smlu.vmemory": "20", "cambricon.com/mlu.smlu.vcore": "10", "cambricon.com/vmlu": "1"},
        id="cambricon-20-10",
    ),
    # HAMi's older count name is rewritten to the one the device plugin advertises (issue 27)
    pytest.param(
        _pod({"cambricon.com/mlunum": "1", "cambricon.com/mlu.smlu.vmemory": "20"}),
        [
            SCHED,
            {"op": "add", "path": "/spec/containers/0/resources/limits/cambricon.com~1vmlu", "value": "1"},
            {"op": "remove", "path": "/spec/containers/0/resources/limits/cambricon.com~1mlunum"},
        ],
        {"cambricon.com/mlu.smlu.vmemory": "20", "cambricon.com/vmlu": "1"},
        id="cambricon-count-alias",
    ),
    pytest.param(
        _pod({"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "2000"}),
        [SCHED],
        {"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "2000"},
        id="ascend910b-2000",
    ),
    pytest.param(
        _pod({"huawei.com/Ascend910B3-memory": "2000"}),
        [SCHED, {"op": "add", "path": "/spec/containers/0/resources/limits/huawei.com~1Ascend910B3", "value": "1"}],
        {"huawei.com/Ascend910B3-memory": "2000", "huawei.com/Ascend910B3": "1"},
        id="ascend910b-memory-only",
    ),
    pytest.param(
        _pod({"hygon.com/dcumem": "2000", "hygon.com/dcucores": "30"}),
        [SCHED, {"op": "add", "path": "/spec/containers/0/resources/limits/hygon.com~1dcunum", "value": "1"}],
        {"hygon.com/dcumem": "2000", "hygon.com/dcucores": "30", "hygon.com/dcunum": "1"},
        id="hygon",
    ),
    # a container that asks through requests only gets a limits object created for it
    pytest.param(
        _pod(None, requests={GPUMEM: "3000"}),
        [SCHED, {"op": "add", "path": "/spec/containers/0/resources/limits", "value": {"nvidia.com/gpu": "1"}}],
        {"nvidia.com/gpu": "1"},
        id="requests-only-creates-limits",
    ),
]


@pytest.mark.parametrize(("pod", "ops", "limits"), ADMITTED)
def test_seed_examples_are_admitted_with_the_exact_patch(
    webhook: Any, admit: Any, pod: dict[str, Any], ops: list[dict[str, Any]], limits: dict[str, str]
) -> None:
    response = admit(webhook, pod)
    assert response["allowed"] is True
    assert "status" not in response
    assert response["_ops"] == ops
    mutated = _apply(pod, response)
    assert mutated["spec"]["schedulerName"] == "hami-scheduler"
    assert mutated["spec"]["containers"][0]["resources"]["limits"] == limits
    assert mutated["metadata"] == pod["metadata"]  # user annotations (selectors) stay as written


def test_init_and_app_containers_are_patched_at_their_own_paths(webhook: Any, admit: Any) -> None:
    pod = _pod({GPUMEM: "1000"}, init=[{"name": "warm", "resources": {"limits": {"hygon.com/dcumem": "512"}}}])
    pod["spec"]["containers"].insert(0, {"name": "sidecar", "image": "envoy"})
    response = admit(webhook, pod)
    assert response["_ops"] == [
        SCHED,
        {"op": "add", "path": "/spec/initContainers/0/resources/limits/hygon.com~1dcunum", "value": "1"},
        {"op": "add", "path": "/spec/containers/1/resources/limits/nvidia.com~1gpu", "value": "1"},
    ]
    mutated = _apply(pod, response)
    assert mutated["spec"]["containers"][0] == {"name": "sidecar", "image": "envoy"}
    assert mutated["spec"]["initContainers"][0]["resources"]["limits"]["hygon.com/dcunum"] == "1"


# ------------------------------------------------------------------ untouched pods and other requests


def test_pod_without_our_resources_gets_no_patch(webhook: Any, admit: Any) -> None:
    pod = _pod({"cpu": "1", "memory": "1Gi", "example.com/fpga": "1"}, annotations={"nvidia.com/use-gputype": "A100"})
    response = admit(webhook, pod)
    assert response == {"uid": response["uid"], "allowed": True, "_ops": None}


def test_privileged_container_without_devices_is_fine(webhook: Any, admit: Any) -> None:
    pod = _pod({GPUMEM: "3000"})
    pod["spec"]["containers"].append({"name": "debug", "securityContext": {"privileged": True}})
    assert admit(webhook, pod)["allowed"] is True


@pytest.mark.parametrize(
    ("config", "scheduler", "expected_op"),
    [
        pytest.param(WebhookConfig(), None, {"op": "add", "path": "/spec/schedulerName", "value": "hami-scheduler"}, id="absent"),
        pytest.param(WebhookConfig(), "", {"op": "replace", "path": "/spec/schedulerName", "value": "hami-scheduler"}, id="empty"),
        pytest.param(
            WebhookConfig(),
            "default-scheduler",
            {"op": "replace", "path": "/spec/schedulerName", "value": "hami-scheduler"},
            id="default-overwritten",
        ),
        pytest.param(WebhookConfig(overwrite_default_scheduler=False), "default-scheduler", None, id="default-kept-when-configured"),
        pytest.param(WebhookConfig(), "hami-scheduler", None, id="already-ours"),
        pytest.param(
            WebhookConfig(scheduler_name="gpu-sched"),
            None,
            {"op": "add", "path": "/spec/schedulerName", "value": "gpu-sched"},
            id="configured-name",
        ),
    ],
)
def test_scheduler_name(
    start_webhook: Any, admit: Any, config: WebhookConfig, scheduler: str | None, expected_op: dict[str, str] | None
) -> None:
    extra = {} if scheduler is None else {"schedulerName": scheduler}
    pod = _pod({GPUMEM: "3000"}, **extra)
    response = admit(start_webhook(config), pod)
    gpu_op = {"op": "add", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu", "value": "1"}
    assert response["_ops"] == ([expected_op] if expected_op else []) + [gpu_op]
    mutated = _apply(pod, response)
    assert mutated["spec"].get("schedulerName") == (expected_op["value"] if expected_op else scheduler)


@pytest.mark.parametrize("scheduler", ["volcano", "hami-scheduler"])
def test_pod_naming_another_scheduler_is_left_alone(start_webhook: Any, admit: Any, scheduler: str) -> None:
    server = start_webhook(WebhookConfig(scheduler_name="gpu-sched"))
    response = admit(server, _pod({GPUMEM: "3000"}, schedulerName=scheduler, nodeName="n1"))
    assert response["allowed"] is True and response["_ops"] is None


def test_other_scheduler_still_cannot_forge_annotations(webhook: Any, admit: Any) -> None:
    response = admit(webhook, _pod({GPUMEM: "3000"}, schedulerName="volcano", annotations={"hami.io/vgpu-node": "n1"}))
    assert response["allowed"] is False and "hami.io/vgpu-node" in response["status"]["message"]


FORGED = {"hami.io/vgpu-node": "n1", "hami.io/bind-phase": "allocating", "hami.io/vgpu-devices-to-allocate": "GPU-a,NVIDIA,3000,0:;"}


@pytest.mark.parametrize(
    ("operation", "kind", "sub_resource"),
    [
        pytest.param("UPDATE", None, None, id="update-by-scheduler"),
        pytest.param("DELETE", None, None, id="delete"),
        pytest.param("CONNECT", None, "exec", id="connect"),
        pytest.param("CREATE", None, "binding", id="binding-subresource"),
        pytest.param("CREATE", {"group": "", "version": "v1", "kind": "Node"}, None, id="node"),
        pytest.param("CREATE", {"group": "", "version": "v1", "kind": "ConfigMap"}, None, id="configmap"),
        pytest.param("CREATE", {"group": "example.com", "version": "v1", "kind": "Pod"}, None, id="pod-of-another-group"),
    ],
)
def test_other_operations_and_kinds_pass_untouched(
    webhook: Any, admit: Any, operation: str, kind: dict[str, str] | None, sub_resource: str | None
) -> None:
    pod = _pod({GPUMEM: "-1"}, annotations=FORGED, nodeName="n1")
    response = admit(webhook, pod, operation=operation, kind=kind, sub_resource=sub_resource, old=pod)
    assert response["allowed"] is True and response["_ops"] is None


def test_same_pod_on_create_is_denied(webhook: Any, admit: Any) -> None:
    """The counterpart of the table above: the table's pod is really deniable."""
    response = admit(webhook, _pod({GPUMEM: "-1"}, annotations=FORGED, nodeName="n1"))
    assert response["allowed"] is False


# ------------------------------------------------------------------ plugins: warnings, failures


class _Advisor:
    """A cross-cutting plugin that only warns."""

    @hookimpl
    def hami_mutate_container(self, container: Any, pod: Any, config: Any) -> ContainerPatch:
        return ContainerPatch(warnings=[f"container {container['name']}: consider nvidia.com/gpucores"])


class _Broken:
    @hookimpl
    def hami_mutate_container(self, container: Any, pod: Any, config: Any) -> ContainerPatch:
        raise RuntimeError("boom")


class _Conflicting:
    @hookimpl
    def hami_mutate_container(self, container: Any, pod: Any, config: Any) -> ContainerPatch:
        return ContainerPatch(limits={"nvidia.com/gpu": "2"})


def test_plugin_warnings_reach_the_user(manager: Any, start_webhook: Any, admit: Any) -> None:
    manager.register(_Advisor(), name="advisor")
    response = admit(start_webhook(), _pod({GPUMEM: "3000"}))
    assert response["allowed"] is True
    assert response["warnings"] == ["container c: consider nvidia.com/gpucores"]


def test_crashing_plugin_is_a_clear_500_denial_and_the_server_keeps_serving(manager: Any, start_webhook: Any, admit: Any) -> None:
    manager.register(_Broken(), name="broken")
    server = start_webhook()
    response = admit(server, _pod({GPUMEM: "3000"}))
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "fail-closed" in response["status"]["message"] and "boom" in response["status"]["message"]
    assert admit(server, _pod({"cpu": "1"}))["allowed"] is True


def test_backend_contract_breach_is_a_500_denial_naming_it(manager: Any, start_webhook: Any, admit: Any) -> None:
    manager.register(_Conflicting(), name="conflicting")
    response = admit(start_webhook(), _pod({GPUMEM: "3000"}))
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "container 'c'" in response["status"]["message"] and "'nvidia.com/gpu'" in response["status"]["message"]


def test_a_backend_may_replace_a_limit_and_its_request(hami_manager, register_backend):
    """Ascend 910C rounds one die up to two: the webhook rewrites the count, limits and requests alike."""
    import base64
    import json

    from hami import hookimpl
    from hami.backendkit.standard import StandardBackend
    from hami.plugin.model import ContainerPatch
    from hami.webhook.admission import review
    from hami.webhook.config import WebhookConfig
    from hami_ascend.plugin import INFO

    class Rounds(StandardBackend):
        @hookimpl
        def hami_mutate_container(self, container, pod, config):
            return ContainerPatch(limits={"huawei.com/Ascend910C": "2"}, warnings=["Ascend910C is allocated in pairs of dies"])

    register_backend(Rounds(INFO))
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {"name": "c", "resources": {"limits": {"huawei.com/Ascend910C": "1"}, "requests": {"huawei.com/Ascend910C": "1"}}}
            ]
        },
    }
    body = json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u",
                "operation": "CREATE",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "default",
                "object": pod,
            },
        }
    ).encode()
    status, answer = review(hami_manager, body, WebhookConfig())
    response = json.loads(answer)["response"]
    assert status == 200 and response["allowed"], response
    patch = json.loads(base64.b64decode(response["patch"]))
    assert {"op": "add", "path": "/spec/containers/0/resources/limits/huawei.com~1Ascend910C", "value": "2"} in patch
    assert {"op": "add", "path": "/spec/containers/0/resources/requests/huawei.com~1Ascend910C", "value": "2"} in patch
    assert response["warnings"] == ["Ascend910C is allocated in pairs of dies"]
