"""HAMi's chart values (Project-HAMi/HAMi, charts/hami/values.yaml at v2.10.0) given to our chart: each
well-known ``--set`` line of HAMi's docs renders what HAMi's chart would (mapped onto ours), or the
install fails naming the key to use; misspelled keys fail through values.schema.json. Each test
quotes the upstream file its ``--set`` line or behaviour comes from."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from hami_deploy_tools import CHART, NAMESPACE  # type: ignore[import-not-found]  # registered by conftest

from hami.plugin.manager import load_backends
from hami.settings import configure_backends

KUBE = "1.31.4"


def _fail(helm: Path, *args: str) -> str:
    """helm template with ``args`` must fail; its message."""
    done = subprocess.run(
        [str(helm), "template", "hami", str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, f"rendered although it should fail: {args}"
    return done.stderr


def _containers(docs, kind: str) -> dict[str, dict[str, Any]]:
    spec = docs.one(kind)["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*(spec.get("initContainers") or []), *spec["containers"]]}


def _nvidia(docs, configmap: str = "hami-device-config") -> dict[str, Any]:
    return yaml.safe_load(docs.one("ConfigMap", configmap)["data"]["config.yaml"])["backends"]["nvidia"]


def _validate(docs) -> None:
    for doc in docs:
        if doc["apiVersion"].startswith(("cert-manager.io", "monitoring.coreos.com")):
            continue
        kubernetes_validate.validate(doc, KUBE, strict=True)


def test_kube_scheduler_tag_from_hamis_keys(render, helm: Path) -> None:
    # README.md at v2.4.0: helm install hami hami-charts/hami --set scheduler.kubeScheduler.imageTag=v1.16.8
    old = render("default", "--set", "scheduler.kubeScheduler.imageTag=v1.28.0", kube_version=KUBE)
    assert _containers(old, "Deployment")["kube-scheduler"]["image"] == "registry.k8s.io/kube-scheduler:v1.28.0"
    # hack/deploy-helm.sh at v2.10.0: --set scheduler.kubeScheduler.image.registry/.repository/.tag (rendered
    # "map[tag:…]:v1.31.4" before; templates/_helpers.tpl "resolvedKubeSchedulerTag")
    new = render(
        "default",
        "--set",
        "scheduler.kubeScheduler.image.registry=registry.k8s.io",
        "--set",
        "scheduler.kubeScheduler.image.repository=kube-scheduler",
        "--set",
        "scheduler.kubeScheduler.image.tag=v1.29.1",
        kube_version=KUBE,
    )
    assert _containers(new, "Deployment")["kube-scheduler"]["image"] == "registry.k8s.io/kube-scheduler:v1.29.1"
    # our older string form keeps working
    string = render("default", "--set", "scheduler.kubeScheduler.image=mirror.example/k8s/kube-scheduler", kube_version=KUBE)
    assert _containers(string, "Deployment")["kube-scheduler"]["image"] == f"mirror.example/k8s/kube-scheduler:v{KUBE}"
    message = _fail(helm, "--set", "scheduler.kubeScheduler.tag=v1.30.0", "--set", "scheduler.kubeScheduler.imageTag=v1.28.0")
    assert "scheduler.kubeScheduler.imageTag=v1.28.0" in message and "scheduler.kubeScheduler.tag=v1.30.0" in message


def test_global_registry_and_tags_reach_every_image(render, helm: Path) -> None:
    # templates/_commons.tpl "common.images.image": global.imageRegistry replaces every image's registry;
    # _helpers.tpl "hami.imageTagOrGlobal": a component's tag wins over global.imageTag
    docs = render(
        "default",
        "--set",
        "global.imageRegistry=mirror.example:5000",
        "--set",
        "global.imageTag=0.1.0-rc1",
        "--set",
        "global.imagePullSecrets[0]=regcred",
        kube_version=KUBE,
    )
    images = {c["image"] for _, c in docs.containers()}
    assert images == {
        "mirror.example:5000/project-hami/hami-py:0.1.0-rc1",
        f"mirror.example:5000/kube-scheduler:v{KUBE}",
        "mirror.example:5000/projecthami/hami:v2.10.0",
    }  # HAMi-core's image keeps its pinned tag
    for workload in (docs.one("Deployment"), docs.one("DaemonSet"), *docs.find("Job")):
        assert workload["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    # hack/deploy-helm.sh at v2.10.0 empties the per-image registries and sets the tags
    tagged = render(
        "default",
        "--set",
        "scheduler.extender.image.registry=",
        "--set",
        "scheduler.extender.image.tag=0.2.0",
        "--set",
        "devicePlugin.image.tag=0.2.0",
        "--set",
        "global.imageTag=0.1.0",
        kube_version=KUBE,
    )
    assert {c["image"] for _, c in tagged.containers() if c["name"] not in ("kube-scheduler", "hami-core")} == {
        "ghcr.io/project-hami/hami-py:0.2.0"
    }
    message = _fail(helm, "--set", "scheduler.extender.image.tag=0.2.0", "--set", "devicePlugin.image.tag=0.3.0")
    assert "devicePlugin.image.tag=0.3.0" in message and "scheduler.extender.image.tag=0.2.0" in message
    message = _fail(helm, "--set", "devicePlugin.image.repository=myorg/hami")  # HAMi's default (projecthami/hami) passes
    assert "devicePlugin.image.repository" in message and "set image.repository" in message


def test_device_plugin_split_and_scaling_reach_the_nvidia_backend(render, helm: Path, tmp_path: Path) -> None:
    # docs/config.md at v2.9.0: helm install hami hami-charts/hami --set devicePlugin.deviceMemoryScaling=5 ...;
    # templates/scheduler/device-configmap.yaml puts them (and devices.nvidia.gpuCorePolicy) in the nvidia section
    docs = render(
        "default",
        "--set",
        "devicePlugin.deviceSplitCount=5",
        "--set",
        "devicePlugin.deviceMemoryScaling=1.5",
        "--set",
        "devicePlugin.deviceCoreScaling=2",
        "--set",
        "devices.nvidia.gpuCorePolicy=force",
        "--set",
        "devicePlugin.deviceListStrategy=cdi-annotations",
        kube_version=KUBE,
    )
    for configmap in ("hami-device-config", "hami-scheduler-config"):
        nvidia = _nvidia(docs, configmap)
        assert (nvidia["split_count"], nvidia["memory_scaling"], nvidia["core_scaling"]) == (5, 1.5, 2)
        assert nvidia["core_utilization_policy"] == "force" and nvidia["device_list_strategy"] == "cdi"
    manager = load_backends()
    configure_backends(manager, yaml.safe_load(docs.one("ConfigMap", "hami-scheduler-config")["data"]["config.yaml"]))
    assert manager.config("nvidia")["split_count"] == 5 and manager.config("nvidia")["memory_scaling"] == 1.5
    message = _fail(helm, "--set", "devicePlugin.deviceSplitCount=5", "--set", "backends.nvidia.config.split_count=4")
    assert "devicePlugin.deviceSplitCount=5" in message and "backends.nvidia.config.split_count=4" in message


def test_default_scheduler_policies(render) -> None:
    # docs/scheduling-policy.md at v2.9.0: --set scheduler.defaultSchedulerPolicy.nodeSchedulerPolicy=binpack
    # --set scheduler.defaultSchedulerPolicy.gpuSchedulerPolicy=spread (templates/scheduler/deployment.yaml flags)
    docs = render(
        "default",
        "--set",
        "scheduler.defaultSchedulerPolicy.nodeSchedulerPolicy=spread",
        "--set",
        "scheduler.defaultSchedulerPolicy.gpuSchedulerPolicy=topology-aware",
        kube_version=KUBE,
    )
    command = _containers(docs, "Deployment")["hami-scheduler"]["command"]
    assert "--node-policy=spread" in command and "--device-policy=topology-aware" in command


def test_legacy_metrics_reach_scheduler_and_agent(render, helm: Path) -> None:
    # charts/hami/values.yaml (v2.10) top-level `legacyMetrics: false`; templates/scheduler/deployment.yaml
    # and templates/device-plugin/daemonsetnvidia.yaml pass --legacy-metrics=true when it is set
    docs = render("default", "--set", "legacyMetrics=true", kube_version=KUBE)
    assert "--legacy-metrics" in _containers(docs, "Deployment")["hami-scheduler"]["command"]
    assert "--legacy-metrics" in _containers(docs, "DaemonSet")["agent"]["command"]
    _validate(docs)
    off = render("default", "--set", "legacyMetrics=false", kube_version=KUBE)
    assert "--legacy-metrics" not in _containers(off, "Deployment")["hami-scheduler"]["command"]
    assert "--legacy-metrics" not in _containers(off, "DaemonSet")["agent"]["command"]
    assert "/legacyMetrics" in _fail(helm, "--set", "legacyMetrics=sometimes")


def test_resource_names_reach_the_backend_config(render) -> None:
    # values.yaml resourceName/resourceMem/resourceCores/resourcePriority → device-configmap.yaml
    # nvidia.resourceCountName & co. (HAMi issues #1708, #2076: beside the NVIDIA device plugin)
    docs = render(
        "default",
        "--set",
        "resourceName=hami.io/vgpu",
        "--set",
        "resourceMem=hami.io/vgpu-memory",
        "--set",
        "resourceCores=hami.io/vgpu-cores",
        "--set",
        "resourcePriority=hami.io/vgpu-priority",
        kube_version=KUBE,
    )
    assert _nvidia(docs)["resource_names"] == {
        "count": "hami.io/vgpu",
        "memory": "hami.io/vgpu-memory",
        "cores": "hami.io/vgpu-cores",
        "priority": "hami.io/vgpu-priority",
    }
    assert "resource_names" not in _nvidia(render("default", kube_version=KUBE))


def test_node_selectors_place_the_agent(render) -> None:
    # README.md at v2.10.0: kubectl label nodes <node-name> gpu=on; values.yaml devicePlugin.nvidiaNodeSelector
    docs = render("default", "--set", "devicePlugin.nvidiaNodeSelector.gpu=on", kube_version=KUBE)
    pod = docs.one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "on"} and "affinity" not in pod
    # one agent for HAMi's two DaemonSets (daemonsetnvidia.yaml and the ascend one): either label places it
    both = render(
        "default",
        "--set",
        "devicePlugin.nvidiaNodeSelector.gpu=on",
        "--set",
        "devices.ascend.enabled=true",
        "--set",
        "devices.ascend.nodeSelector.ascend=on",
        kube_version=KUBE,
    )
    pod = both.one("DaemonSet")["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["on"]}]},
        {"matchExpressions": [{"key": "ascend", "operator": "In", "values": ["on"]}]},
    ]
    assert "nodeSelector" not in pod
    _validate(both)


def test_admission_webhook_keys(render, helm: Path) -> None:
    # docs/config.md at v2.9.0, "Webhook Selector Configs"; templates/scheduler/webhook.yaml
    docs = render(
        "default",
        "--set",
        "scheduler.admissionWebhook.namespaceSelector.matchLabels.team=ml",
        "--set",
        "scheduler.admissionWebhook.objectSelector.matchExpressions[0].key=hami.io/enable",
        "--set",
        "scheduler.admissionWebhook.objectSelector.matchExpressions[0].operator=Exists",
        "--set",
        "scheduler.admissionWebhook.whitelistNamespaces[0]=istio-system",
        "--set",
        "scheduler.admissionWebhook.failurePolicy=Ignore",
        "--set",
        "scheduler.admissionWebhook.reinvocationPolicy=IfNeeded",
        kube_version=KUBE,
    )
    (hook,) = docs.one("MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Ignore" and hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["namespaceSelector"]["matchLabels"] == {"team": "ml"}
    excluded = next(e for e in hook["namespaceSelector"]["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name")
    assert {"kube-system", "istio-system", NAMESPACE} == set(excluded["values"])
    assert {"key": "hami.io/enable", "operator": "Exists"} in hook["objectSelector"]["matchExpressions"]
    assert {"key": "hami.io/webhook", "operator": "NotIn", "values": ["ignore"]} in hook["objectSelector"]["matchExpressions"]
    _validate(docs)
    message = _fail(helm, "--set", "scheduler.admissionWebhook.enabled=false")
    assert "scheduler.admissionWebhook.enabled=false" in message and "webhook.excludeNamespaces" in message


def test_devices_switches(render, helm: Path) -> None:
    # charts/hami/README.md at v2.10.0: devices.ascend.enabled; docs/enflame-gcu-support.md at v2.9.0:
    # --set devices.enflame.enabled=true (no Enflame backend here)
    docs = render("default", "--set", "devices.ascend.enabled=true", kube_version=KUBE)
    env = {e["name"]: e.get("value") for e in _containers(docs, "DaemonSet")["agent"]["env"]}
    assert env["HAMI_BACKENDS"] == "ascend,nvidia"
    assert render("default", "--set", "devices.kunlun.enabled=false", kube_version=KUBE)  # off is what we do anyway
    assert render("default", "--set", "devices.enflame.enabled=true", kube_version=KUBE)  # HAMi's default: no choice made
    # docs/iluvatar-gpu-support.md at v2.9.0: --set devices.iluvatar.enabled=true (HAMi's default: false);
    # HAMi's devices.kunlun is the kunlunxin backend
    docs = render("default", "--set", "devices.iluvatar.enabled=true", "--set", "devices.kunlun.enabled=true", kube_version=KUBE)
    env = {e["name"]: e.get("value") for e in _containers(docs, "DaemonSet")["agent"]["env"]}
    assert env["HAMI_BACKENDS"] == "iluvatar,kunlunxin,nvidia"
    message = _fail(helm, "--set", "metaxResourceName=metax-tech.com/mygpu")
    assert "backends.metax.enabled" in message


def test_typos_fail_naming_the_key(helm: Path) -> None:
    # docs/mthreads-support.md at v2.9.0 itself says --set device.mthreads.enabled=true (singular "device")
    assert "additional properties 'device' not allowed" in _fail(helm, "--set", "device.mthreads.enabled=true")
    assert "'deviceSplitCont' not allowed" in _fail(helm, "--set", "devicePlugin.deviceSplitCont=5")
    assert "'imagetag' not allowed" in _fail(helm, "--set", "scheduler.kubeScheduler.imagetag=v1.28.0")
    assert "'nodepolicy' not allowed" in _fail(helm, "--set", "scheduler.nodepolicy=spread")
    assert "/devicePlugin/deviceMemoryScaling" in _fail(helm, "--set", "devicePlugin.deviceMemoryScaling=lots")


def test_hami_keys_without_an_equivalent_fail_with_a_hint(helm: Path) -> None:
    message = _fail(helm, "--set", "devicePlugin.hostNetwork=true", "--set", "scheduler.nodeLockExpire=10m")
    assert "devicePlugin.hostNetwork=true" in message
    assert 'scheduler.nodeLockExpire="10m": set scheduler.lockExpirySeconds' in message
    message = _fail(helm, "--set", "scheduler.kubeScheduler.extraArgs[0]=--policy-config-file=/config/config.json")
    assert "scheduler.kubeScheduler.extraArgs: --policy-config-file" in message


def _unflatten(flat: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = yaml.safe_load(value)
    return out


def test_a_copied_hami_values_file_installs(render, tmp_path: Path) -> None:
    """HAMi v2.10.0's whole values.yaml (rebuilt from compat/hami-v2.10-defaults.yaml): its defaults pass
    and do what HAMi's would (gpu=on nodes, Ignore, the aliyun kube-scheduler mirror), our image stays ours."""
    flat = yaml.safe_load((CHART / "compat" / "hami-v2.10-defaults.yaml").read_text())
    assert len(flat) > 150 and flat["global.imageTag"] == '"v2.10.0"'
    values = tmp_path / "hami-v2.10-values.yaml"
    values.write_text(yaml.safe_dump(_unflatten(flat)))
    docs = render("default", "-f", str(values), kube_version=KUBE)
    containers = _containers(docs, "Deployment")
    assert containers["hami-scheduler"]["image"] == "ghcr.io/project-hami/hami-py:0.1.0"
    assert containers["kube-scheduler"]["image"] == f"registry.cn-hangzhou.aliyuncs.com/google_containers/kube-scheduler:v{KUBE}"
    assert docs.one("DaemonSet")["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "on"}
    assert docs.one("MutatingWebhookConfiguration")["webhooks"][0]["failurePolicy"] == "Ignore"
    assert _nvidia(docs)["split_count"] == 10
    # HAMi's legacy extraArgs (--policy-config-file, used there before Kubernetes 1.22) are not passed on
    assert not any(a.startswith("--policy-config-file") for a in containers["kube-scheduler"]["command"])
    _validate(docs)


def test_the_hami_value_set(render) -> None:
    """ci/hami-values.yaml (HAMi's keys only; linted and validated with the other value sets)."""
    docs = render("hami")
    containers = _containers(docs, "Deployment")
    assert containers["kube-scheduler"]["image"] == "registry.example:5000/kube-scheduler:v1.30.4"
    assert containers["hami-scheduler"]["image"] == "registry.example:5000/project-hami/hami-py:0.1.0"
    assert {"--node-policy=spread", "--device-policy=binpack"} <= set(containers["hami-scheduler"]["command"])
    nvidia = _nvidia(docs)
    assert (nvidia["split_count"], nvidia["memory_scaling"], nvidia["core_utilization_policy"]) == (5, 1.5, "force")
    agent = docs.one("DaemonSet")["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in agent["tolerations"]
    assert len(agent["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]) == 2
