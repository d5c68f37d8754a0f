"""The Helm chart: lint, strict schema validation per value set, and the contracts between the
rendered objects and the code they run (flags, settings files, names, ports, switches)."""

from __future__ import annotations

import base64
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml
from hami_deploy_tools import CHART, NAMESPACE, VALUE_SETS, values_file  # type: ignore[import-not-found]  # registered by conftest

from hami.certs import certs_command
from hami.cli import cli
from hami.node.cli import agent_command
from hami.plugin.manager import load_backends
from hami.settings import configure_backends, load_settings
from hami.top import top_command

COMMANDS: dict[str, click.Command] = {**cli.commands, "agent": agent_command, "certs": certs_command, "top": top_command}
CRD_KINDS = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate"), ("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint(helm: Path, value_set: str) -> None:
    done = subprocess.run(
        [str(helm), "lint", str(CHART), "--namespace", NAMESPACE, "--kube-version", VALUE_SETS[value_set], *values_file(value_set)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[ERROR]" not in done.stdout and "[WARNING]" not in done.stdout, done.stdout


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_chart_validates_strictly(render, value_set: str) -> None:
    docs = render(value_set)
    assert len(docs) > 10
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            assert set(doc) == {"apiVersion", "kind", "metadata", "spec"} and doc["spec"], doc
            continue
        try:
            kubernetes_validate.validate(doc, VALUE_SETS[value_set], strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} ({value_set}): {exc.message} at {list(exc.path)}")


def _hami_args(container: dict[str, Any]) -> list[str] | None:
    """The argv of a container that runs ``hami`` (directly, or through ``sh -c 'exec hami … > file'``)."""
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2].split(">", 1)[0])
        argv = argv[1:] if argv[0] == "exec" else argv
    return argv if argv and argv[0] == "hami" else None


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_hami_command_line_parses(render, value_set: str) -> None:
    """A flag the CLI does not have would crash-loop the pod: parse every rendered argv with the real commands."""
    seen = set()
    for workload, container in render(value_set).containers():
        argv = _hami_args(container)
        if argv is None:
            continue
        argv = [a for a in argv[1:] if a not in ("-v", "-vv")]
        command = COMMANDS.get(argv[0]) or cli.get_command(click.Context(cli), argv[0])  # lazily registered ones too
        assert command is not None, f"{workload['metadata']['name']}/{container['name']}: no command hami {argv[0]}"
        ctx = click.Context(command)
        try:
            options, rest, order = command.make_parser(ctx).parse_args(argv[1:])
        except click.UsageError as exc:
            pytest.fail(f"{workload['metadata']['name']}/{container['name']}: {exc.format_message()}")
        assert not rest, rest
        for param in order:  # check values too, except paths that exist only in the pod
            if not isinstance(param.type, click.Path):
                param.type_cast_value(ctx, options[param.name])
        seen.add(argv[0])
    assert {"scheduler", "scheduler-config"} <= seen


def _config_file(docs, name: str) -> dict[str, Any]:
    return yaml.safe_load(docs.one("ConfigMap", name)["data"]["config.yaml"]) or {}


@pytest.mark.parametrize("value_set", ["default", "all-backends"])
def test_settings_files_load_with_the_components_own_readers(render, value_set: str, tmp_path: Path) -> None:
    docs = render(value_set)
    scheduler = _config_file(docs, "hami-scheduler-config")
    agent = _config_file(docs, "hami-device-config")
    manager = load_backends()
    configure_backends(manager, scheduler)  # raises on a backend that is not installed or a bad shape
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(agent))
    assert load_settings(str(path)) == scheduler  # the agent reads the same file shape with the same reader
    enabled = set(_env(docs.one("Deployment"), "hami-scheduler")["HAMI_BACKENDS"].split(","))
    assert set(scheduler["backends"]) == enabled
    if value_set == "all-backends":
        assert scheduler["backends"]["nvidia"] == {
            "split_count": 10,
            "memory_scaling": 1.5,
            "hook_path": "/usr/local",
            "libvgpu_version": "v2.10.0",
        }


def _env(workload: dict[str, Any], container: str) -> dict[str, str]:
    spec = workload["spec"]["template"]["spec"]
    found = next(c for c in [*(spec.get("initContainers") or []), *spec["containers"]] if c["name"] == container)
    return {e["name"]: e.get("value", "") for e in found.get("env") or []}


def test_backend_switches_reach_every_component_and_the_host_mounts(render) -> None:
    for value_set, backends in (
        ("default", {"nvidia"}),
        ("all-backends", {"nvidia", "ascend", "cambricon", "hygon"}),
        ("ha-ascend", {"ascend"}),
    ):
        docs = render(value_set)
        for workload in (*docs.find("Deployment"), *docs.find("DaemonSet")):
            spec = workload["spec"]["template"]["spec"]
            for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
                if _hami_args(container):
                    assert set(_env(workload, container["name"])["HAMI_BACKENDS"].split(",")) == backends, (value_set, container["name"])
        agent = docs.one("DaemonSet")["spec"]["template"]["spec"]
        host_paths = {v["hostPath"]["path"] for v in agent["volumes"] if "hostPath" in v}
        mounted = {m["mountPath"] for m in agent["containers"][0]["volumeMounts"]}
        assert host_paths <= mounted | {"/var/lib/kubelet/device-plugins"}
        assert ("/usr/local/Ascend/driver" in host_paths) == ("ascend" in backends)
        assert "/usr/local" not in host_paths, "the hook path itself would hide the image's /usr/local"
    custom = render("default", "--set", "agent.hookPath=/opt/hami/")
    assert "/opt/hami/vgpu" in {
        v["hostPath"]["path"] for v in custom.one("DaemonSet")["spec"]["template"]["spec"]["volumes"] if "hostPath" in v
    }
    nvidia = yaml.safe_load(custom.one("ConfigMap", "hami-device-config")["data"]["config.yaml"])["backends"]["nvidia"]
    assert nvidia["hook_path"] == "/opt/hami/" and nvidia["extra_host_paths"] == ["/opt/hami/vgpu"]  # else the manager refuses the mounts


def test_kube_scheduler_follows_the_cluster_version(render) -> None:
    for version, tag in (("1.31.4", "v1.31.4"), ("v1.29.3-eks-1234abc", "v1.29.3")):
        deployment = render("default", kube_version=version).one("Deployment")
        image = next(c["image"] for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "kube-scheduler")
        assert image == f"registry.k8s.io/kube-scheduler:{tag}"
    pinned = render("ha-ascend").one("Deployment")
    assert "registry.k8s.io/kube-scheduler:v1.30.2" in [c["image"] for c in pinned["spec"]["template"]["spec"]["containers"]]


def test_the_webhook_reaches_the_scheduler_and_honours_the_ignore_label(render) -> None:
    for value_set, policy in (("default", "Fail"), ("ha-ascend", "Ignore")):
        docs = render(value_set)
        (hook,) = docs.one("MutatingWebhookConfiguration")["webhooks"]
        assert hook["admissionReviewVersions"] == ["v1"] and hook["sideEffects"] == "None" and hook["failurePolicy"] == policy
        assert hook["rules"] == [
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["pods"], "scope": "Namespaced"}
        ]
        # UPDATE of hami's pod annotations: only the scheduler's and the agents' service accounts (issue 19)
        deployment, daemonset = docs.one("Deployment"), docs.one("DaemonSet")
        writers = _env(deployment, "hami-scheduler")["HAMI_SYSTEM_WRITERS"].split(",")
        accounts = [w["spec"]["template"]["spec"]["serviceAccountName"] for w in (deployment, daemonset)]
        assert writers == [f"system:serviceaccount:{NAMESPACE}:{name}" for name in accounts]
        ignore = {"key": "hami.io/webhook", "operator": "NotIn", "values": ["ignore"]}
        assert ignore in hook["namespaceSelector"]["matchExpressions"] and ignore in hook["objectSelector"]["matchExpressions"]
        excluded = next(e for e in hook["namespaceSelector"]["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name")
        assert {"kube-system", NAMESPACE} <= set(excluded["values"])
        service = hook["clientConfig"]["service"]
        svc = docs.one("Service", service["name"])
        assert service["path"] == "/webhook" and service["namespace"] == NAMESPACE
        port = next(p for p in svc["spec"]["ports"] if p["port"] == service["port"])
        deployment = docs.one("Deployment")
        pod = deployment["spec"]["template"]["spec"]
        scheduler = next(c for c in pod["containers"] if c["name"] == "hami-scheduler")
        assert port["targetPort"] in [p["name"] for p in scheduler["ports"]]
        assert svc["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        bind = next(a for a in scheduler["command"] if a.startswith("--bind="))
        assert bind.endswith(f":{scheduler['ports'][0]['containerPort']}")


def test_extra_system_writers_join_hamis_own_accounts(render, helm: Path) -> None:
    """A vendor device plugin that writes back a key a backend declares needs to be a system writer."""
    plugin = "system:serviceaccount:kube-system:cambricon-device-plugin"
    deployment = render("default", "--set", f"webhook.systemWriters[0]={plugin}").one("Deployment")
    writers = _env(deployment, "hami-scheduler")["HAMI_SYSTEM_WRITERS"].split(",")
    assert len(writers) == 3 and writers[-1] == plugin
    assert all(w.startswith(f"system:serviceaccount:{NAMESPACE}:") for w in writers[:2])
    bad = subprocess.run(
        [str(helm), "template", "hami", str(CHART), "--set", "webhook.systemWriters[0]=cambricon-device-plugin"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "systemWriters" in bad.stderr


def test_tls_by_hook_jobs_or_by_cert_manager(render) -> None:
    docs = render("default")
    jobs = {j["metadata"]["name"]: j for j in docs.find("Job")}
    assert set(jobs) == {"hami-certs-create", "hami-certs-patch"}
    assert jobs["hami-certs-create"]["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    patch = jobs["hami-certs-patch"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--webhook-config=hami-webhook" in patch and "--secret=hami-tls" in patch and "--service=hami-scheduler" in patch
    secret_volume = next(v for v in docs.one("Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    assert secret_volume["secret"]["secretName"] == "hami-tls"

    managed = render("all-backends")
    assert not managed.find("Job")
    certificate = managed.one("Certificate")
    assert certificate["spec"]["secretName"] == "hami-tls"
    assert "hami-scheduler.hami-system.svc" in certificate["spec"]["dnsNames"]
    webhook = managed.one("MutatingWebhookConfiguration")
    assert webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{certificate['metadata']['name']}"


def test_signing_key_is_generated_or_taken_from_an_existing_secret(render) -> None:
    """An Ed25519 pair: the private key in a Secret only the scheduler mounts, the public key (in a
    certificate, all sprig can make) in a ConfigMap the agents mount; the two belong together."""
    from hami.wire.signing import SigningKeys, sign, verify

    docs = render("default")
    secret = docs.one("Secret", "hami-signing-key")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    public = docs.one("ConfigMap", "hami-signing-public-key")["data"]
    assert set(public) == {"public-key"} and "PRIVATE" not in public["public-key"]
    files = {name: base64.b64decode(value) for name, value in secret["data"].items()}
    assert set(files) == {"key", "public-key"} and files["key"].startswith(b"-----BEGIN PRIVATE KEY-----")
    with tempfile.TemporaryDirectory() as scheduler_dir, tempfile.TemporaryDirectory() as agent_dir:
        for name, content in files.items():
            Path(scheduler_dir, name).write_bytes(content)
        Path(agent_dir, "public-key").write_text(public["public-key"])
        scheduler, agent = SigningKeys.from_directory(scheduler_dir), SigningKeys.public_from_directory(agent_dir)
        verify(agent, sign(scheduler, "uid", "node", {"a-devices-allocated": "x"}), "uid", "node", {"a-devices-allocated": "x"})
    deployment, daemonset = docs.one("Deployment"), docs.one("DaemonSet")
    assert {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}["signing-key"]["secret"][
        "secretName"
    ] == "hami-signing-key"
    agent_volumes = daemonset["spec"]["template"]["spec"]["volumes"]
    assert {v["name"]: v for v in agent_volumes}["signing-key"] == {"name": "signing-key", "configMap": {"name": "hami-signing-public-key"}}
    assert not any(
        v.get("secret", {}).get("secretName", "").startswith("hami-signing") for v in agent_volumes
    )  # no Secret with the private key
    assert not any("legacy" in arg for _, c in docs.containers() for arg in c.get("command", []))  # nothing to migrate on a fresh install
    docs = render("ha-ascend")
    assert not docs.find("Secret") and not docs.find("ConfigMap", "my-signing-public-key")
    volumes = {v["name"]: v for v in docs.one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["signing-key"]["secret"]["secretName"] == "my-signing-key"
    volumes = {v["name"]: v for v in docs.one("DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["signing-key"]["configMap"]["name"] == "my-signing-public-key"


def test_an_existing_secret_needs_the_public_key_configmap(helm) -> None:
    done = subprocess.run(
        [str(helm), "template", "hami", str(CHART), "--set", "signing.existingSecret=mine"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "signing.existingSecret needs signing.existingPublicKeyConfigMap" in done.stderr


def test_replicas_turn_on_leader_election_in_both_containers(render) -> None:
    single = render("default").one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--leader-elect=false" in single[0]["command"] and "--leader-elect" not in single[1]["command"]
    docs = render("ha-ascend")
    kube, hami = docs.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--leader-elect=true" in kube["command"] and "--leader-elect" in hami["command"]
    assert f"--lease-namespace={NAMESPACE}" in hami["command"]
    lease_names = next(r for r in docs.one("Role", "npu-scheduler")["rules"] if r.get("resourceNames"))["resourceNames"]
    assert "npu-scheduler" in lease_names  # the extender's lease is named after the scheduler name
    assert "npu-scheduler-kube-scheduler" in lease_names and "--leader-elect-resource-name=npu-scheduler-kube-scheduler" in kube["command"]


def test_optional_monitoring_objects(render) -> None:
    assert not render("default").find("ServiceMonitor")
    docs = render("all-backends")
    monitors = {m["metadata"]["name"]: m for m in docs.find("ServiceMonitor")}
    assert set(monitors) == {"hami-scheduler", "hami-agent"}, sorted(monitors)  # the agent serves /metrics by default
    scheduler = monitors["hami-scheduler"]
    assert scheduler["metadata"]["labels"]["release"] == "prometheus"
    assert scheduler["spec"]["endpoints"][0]["port"] == "https"
    assert monitors["hami-agent"]["spec"]["endpoints"][0]["port"] == "metrics"
    dashboard = docs.one("ConfigMap", "hami-dashboard")
    assert (
        '"hami_gpu_memory_allocated_bytes' in dashboard["data"]["hami.json"]
        or "hami_gpu_memory_allocated_bytes" in dashboard["data"]["hami.json"]
    )


def test_a_simulated_inventory_reaches_the_agent(render) -> None:
    from hami.backendkit.inventory import parse_inventory

    docs = render("ha-ascend")
    config = docs.one("ConfigMap", "npu-device-config")["data"]
    (node,) = parse_inventory(yaml.safe_load(config["inventory.yaml"]))
    assert node.name == "npu-0" and len(node.devices) == 8
    agent = docs.one("DaemonSet")
    env = _env(agent, "agent")
    mount = next(m for m in agent["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] if m["name"] == "config")
    assert env["HAMI_INVENTORY"] == f"{mount['mountPath']}/inventory.yaml" and env["HAMI_STRICT_PLUGINS"] == "1"
    assert "HAMI_INVENTORY" not in _env(render("default").one("DaemonSet"), "agent")


def test_kube_scheduler_reaches_the_extender_on_loopback_only(render) -> None:
    """Issue 19: the verbs listen on the pod's 127.0.0.1; the Service (and so every other pod) reaches only
    the webhook listener, which refuses them. kube-scheduler's generated configuration points at the loopback one."""
    for value_set in VALUE_SETS:
        deployment = render(value_set).one("Deployment")
        pod = deployment["spec"]["template"]["spec"]
        scheduler = next(c for c in pod["containers"] if c["name"] == "hami-scheduler")
        extender_bind = next(a.split("=", 1)[1] for a in scheduler["command"] if a.startswith("--extender-bind="))
        host, port = extender_bind.rsplit(":", 1)
        assert host == "127.0.0.1"
        assert int(port) not in [p["containerPort"] for p in scheduler["ports"]]  # no named port: nothing routes to it
        (init,) = [c for c in pod["initContainers"] if c["name"] == "scheduler-config"]
        assert f"hami scheduler-config --url http://127.0.0.1:{port} " in init["args"][0]
        assert not any(a.startswith("--client-ca") for a in scheduler["command"])


def test_the_extender_port_must_differ_from_the_webhook_port(helm: Path) -> None:
    done = subprocess.run(
        [str(helm), "template", "hami", str(CHART), "--namespace", NAMESPACE, "--set", "scheduler.extenderPort=8443"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "scheduler.extenderPort (8443) must differ from scheduler.port" in done.stderr


def test_the_agent_keeps_its_state_and_reads_pod_resources_on_the_host(render) -> None:
    """Partition ledgers and the pod ledger must outlive the agent's pod (it reconciles at start), and the
    agent asks kubelet's PodResources API which pods still hold devices: both are host mounts."""
    for args in ((), ("--set", "agent.stateDir=/data/hami")):
        agent = render("default", *args).one("DaemonSet")["spec"]["template"]["spec"]
        state = "/data/hami" if args else "/var/lib/hami"
        container = agent["containers"][0]
        assert f"--state-dir={state}" in container["command"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        host = {v["name"]: v["hostPath"]["path"] for v in agent["volumes"] if "hostPath" in v}
        assert host["state"] == state and state in mounts
        assert host["pod-resources"] == "/var/lib/kubelet/pod-resources"
        assert mounts["/var/lib/kubelet/pod-resources"]["readOnly"] is True
