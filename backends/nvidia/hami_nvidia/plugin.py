"""NVIDIA GPUs: HAMi's names and request rules (from :class:`StandardBackend`), plus NVML discovery,
per-node splitting, MIG, NVLink-aware selection, the four isolation modes and XID health.

Each hook below says what it adds; the helpers live in small modules (``settings``, ``nvml``,
``selectors``, ``topology``, ``mig``, ``edits``, ``mps``, ``health``). Nothing here touches the
driver at import time.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hami.sdk import (
    AnnotationKeys,
    BackendError,
    BackendInfo,
    ContainerEdits,
    ContainerPatch,
    DeviceKind,
    DeviceRequest,
    DeviceUsage,
    Enforcement,
    GrantedDevice,
    HealthEvent,
    NodeAnnotations,
    NodeContext,
    PhysicalDevice,
    RequestError,
    ResourceNames,
    SchedulableDevice,
    StandardBackend,
    container_resources,
    hookimpl,
    inventory_devices,
    split_evenly,
)
from hami_nvidia import edits, enforcement, mig, nvml, topology
from hami_nvidia.health import NvmlEventSource, XidWatcher, nvml_probe
from hami_nvidia.mps import MpsDaemon, MpsPaths
from hami_nvidia.selectors import ATTRIBUTE, PARSE_BOOL, USE_TYPE, Selectors, parse_bool
from hami_nvidia.settings import (
    DEFAULT_CONFIG,
    exclusion,
    ignored_xids,
    mode_of,
    node_config,
    number,
    strategy_of,
)

log = logging.getLogger(__name__)

HOOK_PATH = "/usr/local/vgpu"
MPS_ROOT = "/run/nvidia/mps"

KIND = DeviceKind(
    vendor="NVIDIA",
    resources=ResourceNames(
        count="nvidia.com/gpu",
        memory="nvidia.com/gpumem",
        memory_percentage="nvidia.com/gpumem-percentage",
        cores="nvidia.com/gpucores",
        extra=("nvidia.com/priority",),
    ),
    annotations=AnnotationKeys.hami("hami.io/node-nvidia-register", "hami.io/node-handshake", "hami.io/vgpu"),
    type_selector=USE_TYPE,
    # model names as cluster traces spell them (Alibaba's openb: P100, T4, V100M16, V100M32, A10)
    models=("P100", "T4", "V100", "V100M16", "V100M32", "A10", "A30", "A40", "A100", "H100", "H800", "H20", "L4", "L20", "L40", "L40S"),
)

INFO = BackendInfo(
    name="nvidia",
    kinds=[KIND],
    description="NVIDIA GPUs shared by memory and SM limits (HAMi-core, MPS, MIG)",
    default_config=DEFAULT_CONFIG,
    host_paths=(HOOK_PATH, "/tmp/vgpulock", "/dev", "/var/run/nvidia-container-devices", MPS_ROOT),
)


def _owner(pod: Mapping[str, Any], container: Mapping[str, Any]) -> tuple[str, str]:
    return str((pod.get("metadata") or {}).get("uid") or ""), str(container.get("name") or "")


class NvidiaBackend(StandardBackend):
    """The NVIDIA backend; one instance per process. The node agent hands every hook the node and
    the granted devices; MIG assignments live in the node's state directory."""

    def __init__(self, info: BackendInfo) -> None:
        super().__init__(info)
        self.event_source_factory = NvmlEventSource
        self.probe = nvml_probe
        self._watcher: XidWatcher | None = None
        self._mps: tuple[tuple[str, str, str], MpsDaemon] | None = None
        self._usage: Any = None  # hami_nvidia.usage.UsageMonitor, made on the first real-node sample

    # ------------------------------------------------------------ discovery

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        """The node inventory on a simulated node (sandbox, simulator, CI), else NVML. A GPU the node's
        ``include``/``exclude``/``filterdevices`` drop, or in MIG mode without instances, is returned
        unadvertised with the reason (``hami devices`` lists it), never silently left out."""
        cfg = node_config(config, node.name)
        found = inventory_devices(config, node.name, self.info.vendors) if node.simulated else nvml.discover(node.name, cfg)
        devices, skipped = [], []
        for device in found:
            why = exclusion(config, device.id, device.index, node.name) if device.advertised else ""
            if why:
                skipped.append(device.id)
            elif device.advertised and device.attributes.get("mig_enabled") and not mig.instances(device):
                why = (
                    f"MIG mode is on but GPU {device.index} has no MIG instances: create them "
                    f"(nvidia-smi mig -i {device.index} -cgi <profiles> -C) or turn MIG off (nvidia-smi -i {device.index} -mig 0)"
                )
            devices.append(attrs.evolve(device, advertised=False, reason=why) if why else device)
        if skipped:
            log.info("event=gpus_filtered node=%s kept=%d skipped=%s", node.name, sum(d.advertised for d in devices), ",".join(skipped))
        return devices

    @hookimpl
    def hami_device_health(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[HealthEvent]:
        """XID events of the node's GPUs (the watcher thread starts on the first call); simulated
        GPUs have no driver to report any."""
        watched = [] if node.simulated else [d.id for d in devices]
        if not watched:
            return []
        if self._watcher is None:
            self._watcher = XidWatcher(
                self.event_source_factory,
                ignored=ignored_xids(config),
                recovery_seconds=number(config, "health_recovery_seconds"),
                probe=self.probe,
                wait_ms=int(number(config, "health_wait_ms", 1)),
            )
        self._watcher.ensure_started(watched)
        return self._watcher.changes(watched)

    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """HAMi-core's library, the MPS daemon, MIG mode per GPU, as the node runs them (module ``enforcement``)."""
        return enforcement.check(devices, config, node)

    # ------------------------------------------------------------ slicing

    @hookimpl
    def hami_split_device(self, device: PhysicalDevice, config: Mapping[str, Any], node: NodeContext) -> SchedulableDevice:  # type: ignore[override]  # pluggy passes hook arguments by name
        """HAMi's even split with this node's overrides; a GPU in MIG mode offers its instances."""
        cfg = node_config(config, node.name)
        mode = mode_of(cfg)
        if device.attributes.get("mig_enabled"):
            layout = mig.geometry(device)
            return SchedulableDevice(
                id=device.id,
                vendor=device.vendor,
                type=device.type,
                count=sum(t["count"] for t in layout),
                memory=sum(t["memory"] * t["count"] for t in layout),
                cores=device.cores,
                index=device.index,
                numa=device.numa,
                mode="mig",
                healthy=device.healthy,
                partitions=(layout,) if layout else (),
            )
        if mode == "mig":
            log.warning(
                "event=mig_mode_without_mig device=%s reason=%r",
                device.id,
                "node mode is mig but the GPU is not in MIG mode; nothing will fit on it",
            )
        return split_evenly(device, {**cfg, "mode": mode})

    @hookimpl
    def hami_node_annotations(
        self, devices: Sequence[SchedulableDevice], physical: Sequence[PhysicalDevice], config: Mapping[str, Any]
    ) -> NodeAnnotations | None:
        """HAMi's ``hami.io/node-nvidia-score``: pair scores of the registered GPUs."""
        if not config.get("topology_aware", True):
            return None
        registered = {d.id for d in devices}
        text = topology.encode_scores([p for p in physical if p.id in registered])
        return NodeAnnotations({topology.SCORE_ANNOTATION: text}) if text else None

    # ------------------------------------------------------------ scheduling

    def resource_names(self, config: Mapping[str, Any]) -> ResourceNames:
        """The resource names in use (``resource_names`` in the config renames them)."""
        return self.kinds(config)[0].resources

    def priority_resource(self, config: Mapping[str, Any]) -> str:
        return self.resource_names(config).extra[0]

    @hookimpl
    def hami_container_requests(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> list[DeviceRequest]:
        """HAMi's rules plus the pod's selectors, parsed once into the request (bad values are
        RequestErrors naming them), ``numa-bind`` as the request's ``single_numa``, a checked priority:
        a whole number >= 0, lower runs first (0 high, 1 low and HAMi-core's default: upstream
        examples/nvidia/example.yaml; cmd/vGPUmonitor/feedback.go orders any level)."""
        requests = super().hami_container_requests(container, pod, config)
        if not requests:
            return []
        selectors = Selectors.from_pod(pod)
        try:
            edits.priority(container, self.priority_resource(config))
        except BackendError as exc:
            raise RequestError(f"container {container.get('name')!r}: {exc} (0 is high priority, 1 low)") from None
        extra: dict[str, Any] = {ATTRIBUTE: selectors}
        return [attrs.evolve(r, attributes={**r.attributes, **extra}, single_numa=selectors.numa_bind) for r in requests]

    @hookimpl
    def hami_mutate_container(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> ContainerPatch | None:
        """HAMi's defaults (one GPU for memory or cores alone), plus upstream's defaultExclusiveCoreIfNeeded
        (pkg/device/nvidia/device.go MutateAdmission): a GPU count without cores and without memory (or with
        100 % of it) asks for the whole card, so ``gpucores: 100`` keeps others off it. A warning for a
        ``CUDA_DISABLE_CONTROL`` value that is not a boolean (HAMi-core's control stays on)."""
        patch = super().hami_mutate_container(container, pod, config)
        limits, warnings = (dict(patch.limits), list(patch.warnings)) if patch else ({}, [])
        names = self.resource_names(config)
        resources = {**container_resources(container), **limits}
        if names.count in resources and names.cores and names.cores not in resources:
            exclusive = True
            if names.memory_percentage and names.memory_percentage in resources:
                exclusive = str(resources[names.memory_percentage]).strip() == "100"
            elif names.memory and names.memory in resources:
                exclusive = False
            if exclusive and str(resources[names.count]).strip() != "0":
                limits[names.cores] = "100"
        for value in edits.disable_control_values(container):
            if parse_bool(value) is None:
                warnings.append(
                    f"container {container.get('name')!r}: {edits.DISABLE_CONTROL}={value!r} is not a boolean, so HAMi-core's limits stay on; "
                    f"write true to disable them (Go's ParseBool spellings: {', '.join(PARSE_BOOL)})"
                )
        return ContainerPatch(limits=limits, warnings=warnings) if limits or warnings else None

    @hookimpl
    def hami_normalize_request(
        self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> DeviceRequest | None:
        """On a MIG GPU, round up to the smallest MIG profile that holds the request."""
        return mig.normalize(request, device.device) if device.device.mode == "mig" else None

    @hookimpl
    def hami_device_fits(
        self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> str | None:
        """Type and UUID selectors, the isolation mode, and a MIG profile that holds the request."""
        reason = Selectors.of(request, pod).reason(device.device)
        if reason is None and device.device.mode == "mig" and not request.attributes.get(mig.PROFILE_ATTRIBUTE):
            return mig.NO_PROFILE
        return reason

    @hookimpl
    def hami_select_devices(
        self,
        request: DeviceRequest,
        candidates: Sequence[DeviceUsage],
        node_annotations: Mapping[str, str],
        pod: Mapping[str, Any],
        config: Mapping[str, Any],
    ) -> list[str] | None:
        """The best-connected set by the node's pair scores (within one NUMA node when bound); for one
        GPU (asked only under the ``topology-aware`` policy) the worst-connected candidate, as HAMi's
        ``computeWorstSingleCard`` does; None (the core's choice) when the node published no scores or
        they do not tell GPUs apart."""
        text = node_annotations.get(topology.SCORE_ANNOTATION)
        if request.count < 1 or not text or not config.get("topology_aware", True):
            return None
        scores = topology.decode_scores(text)
        ids = [c.device.id for c in candidates]
        if not topology.scores_differ(scores, ids):
            return None
        if request.count == 1:
            worst = topology.worst_single(ids, scores)
            return [worst] if worst is not None else None
        if not request.single_numa:
            return topology.best_set(ids, request.count, scores)
        groups: dict[int, list[str]] = {}
        for usage in candidates:
            groups.setdefault(usage.device.numa, []).append(usage.device.id)
        sets = [s for s in (topology.best_set(g, request.count, scores) for g in groups.values()) if s]
        return max(sets, key=lambda s: topology.set_score(scores, s)) if sets else []

    # ------------------------------------------------------------ runtime

    def _mode(self, devices: Sequence[GrantedDevice], pod: Mapping[str, Any], config: Mapping[str, Any]) -> str:
        """The pod's ``nvidia.com/vgpu-mode`` (of a list, the one the granted GPUs were split for), else
        what the granted GPUs were split for on this node."""
        try:
            wanted = Selectors.from_pod(pod).modes
        except RequestError as exc:
            raise BackendError(str(exc)) from None
        modes = {d.split.mode or mode_of(config) for d in devices}
        if len(wanted) == 1:
            return wanted[0]
        if wanted:
            modes = (modes & set(wanted)) or set(wanted)
        if len(modes) > 1:
            raise BackendError(
                f"the GPUs granted ({', '.join(d.id for d in devices)}) run different isolation modes {sorted(modes)}; set nvidia.com/vgpu-mode"
            )
        return modes.pop() if modes else mode_of(config)

    @staticmethod
    def _mig_instances(devices: Sequence[GrantedDevice], owner: tuple[str, str], node: NodeContext) -> list[str]:
        """A MIG instance per grant, all or none (a failure frees what this container held)."""
        ledger = mig.MigLedger(node.state_dir)
        found = []
        try:
            for d in devices:
                if not d.device.attributes.get("mig_enabled"):
                    raise BackendError(f"GPU {d.id} is not a MIG-enabled GPU; it cannot serve nvidia.com/vgpu-mode mig")
                found.append(ledger.assign(owner, d.device, d.grant.memory))
        except BackendError:
            ledger.release(owner)
            raise
        return found

    def _mps_daemon(self, config: Mapping[str, Any]) -> MpsDaemon:
        key = (str(config.get("mps_control")), str(config.get("mps_root")), str(config.get("host_root") or "/"))
        if self._mps is None or self._mps[0] != key:
            self._mps = (key, MpsDaemon(key[0], MpsPaths(key[1]), host_root=key[2]))
        return self._mps[1]

    @hookimpl
    def hami_prepare(
        self,
        devices: Sequence[GrantedDevice],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        config: Mapping[str, Any],
        node: NodeContext,
    ) -> None:
        """hami-core: the per-container cache dir; mps: a running control daemon, with the default
        pinned-memory limit on each granted GPU before its client starts; mig: a free instance of
        the granted size for each GPU (idempotent). A simulated node touches no host."""
        cfg = node_config(config, node.name)
        mode = self._mode(devices, pod, cfg)
        if mode == "hami-core" and not node.simulated:
            owner = _owner(pod, container)
            if all(owner):
                path = edits.host_path(cfg, edits.hook_dir(cfg))
                if path.is_dir():  # without HAMi-core installed, container_edits refuses with the reason
                    # world-writable as upstream server.go makes them: any container user writes its cache and locks
                    for made in (edits.host_path(cfg, edits.cache_dir(cfg, owner)), edits.host_path(cfg, edits.VGPU_LOCK)):
                        made.mkdir(parents=True, exist_ok=True)
                        try:
                            made.chmod(0o777)
                        except PermissionError as exc:  # made by someone else (an older HAMi): theirs to keep
                            log.warning("event=hami_core_dir_mode path=%s error=%r", made, str(exc))
        elif mode == "mps" and cfg.get("mps_manage_daemon", True) and not node.simulated:
            daemon = self._mps_daemon(cfg)
            daemon.ensure(active_thread_percentage=int(number(cfg, "mps_default_active_thread_percentage")))
            limit = int(number(cfg, "mps_default_pinned_mem_limit"))
            if limit:
                daemon.set_default_limits(pinned_memory={d.index: limit for d in devices})
        elif mode == "mig":
            self._mig_instances(devices, _owner(pod, container), node)

    @hookimpl
    def hami_container_edits(
        self,
        devices: Sequence[GrantedDevice],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        config: Mapping[str, Any],
        node: NodeContext,
    ) -> ContainerEdits:
        """Env, mounts and CDI names of the chosen isolation mode (module ``edits``)."""
        cfg, grants = node_config(config, node.name), [d.grant for d in devices]
        mode = self._mode(devices, pod, cfg)
        strategy = strategy_of(cfg)
        if mode == "hami-core" and not node.simulated and (all(d.whole for d in devices) or cfg.get("advisory_limits") is True):
            missing = enforcement.hami_core(cfg)
            if not missing.ready:  # nothing to enforce on a whole GPU; advisory limits were asked for
                log.warning(
                    "event=hami_core_missing_visibility_only pod=%s reason=%r", (pod.get("metadata") or {}).get("name"), missing.reason
                )
                mode = "none"
        if mode == "hami-core":
            result = edits.hami_core(grants, pod, container, cfg, strategy, not node.simulated, self.priority_resource(cfg))
        elif mode == "mps":
            result = edits.mps(grants, cfg, strategy)
        elif mode == "mig":
            held = self._mig_instances(devices, _owner(pod, container), node)
            result = attrs.evolve(edits.mig(held, strategy), partitions=mig.partition_instances(devices, held))
        else:
            result = edits.none(grants, strategy)
        log.info(
            "event=container_edits pod=%s container=%s mode=%s devices=%s",
            (pod.get("metadata") or {}).get("name"),
            container.get("name"),
            mode,
            ",".join(g.id for g in grants),
        )
        return result

    @hookimpl
    def hami_release(self, pod: Mapping[str, Any], container: Mapping[str, Any], config: Mapping[str, Any], node: NodeContext) -> None:
        """Free the container's MIG instances and remove its HAMi-core cache dir (idempotent)."""
        owner = _owner(pod, container)
        if not all(owner):
            return
        freed = mig.MigLedger(node.state_dir).release(owner)
        if not node.simulated:
            cfg = node_config(config, node.name)
            shutil.rmtree(edits.host_path(cfg, edits.cache_dir(cfg, owner)), ignore_errors=True)
        if freed:
            log.info("event=mig_released pod_uid=%s container=%s instances=%s", owner[0], owner[1], ",".join(freed))

    @hookimpl
    def hami_sample_usage(
        self, devices: Sequence[PhysicalDevice], containers: Sequence[Any], config: Mapping[str, Any], node: NodeContext
    ) -> Any:
        """NVML host figures, HAMi-core's region per container and priority feedback (hami_nvidia.usage)."""
        from hami.sdk import simulated_usage
        from hami_nvidia import usage

        if node.simulated:
            return simulated_usage(devices, containers, usage.time.time())
        if self._usage is None:
            self._usage = usage.UsageMonitor()
        return self._usage.sample(devices, containers, node_config(config, node.name))

    def close(self) -> None:
        """Stop the XID watcher thread and the usage monitor (tests, agent shutdown)."""
        if self._watcher is not None:
            self._watcher.stop()
        if self._usage is not None:
            self._usage.close()


plugin = NvidiaBackend(INFO)
"""The entry point ``hami_nvidia.plugin:plugin``."""
