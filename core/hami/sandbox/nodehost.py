"""Node hosts: the simulated nodes of a large sandbox in worker processes (issue 29).

Why: one interpreter hosting 500 nodes spends its single core on the nodes' idle work (each agent's
device-plugin gRPC server, health, registration, kubelet and usage loops, each fake kubelet's
gRPC endpoints: ~4,000 threads) and the pods wait for the interpreter lock. Here each of K worker
processes (``python -m hami.sandbox.nodehost``: a fresh interpreter, no inherited locks or gRPC
state, and unlike multiprocessing's spawn no re-import of the caller's ``__main__``) hosts a shard of the nodes, their fake
kubelets and real node agents, talking to the main process's API server over real HTTP and to each
other over the same gRPC paths as in one process (registration, ListAndWatch, Allocate). The main
process keeps the API server, the scheduler extender, the webhook and the kube-scheduler stand-in;
it asks a node's host to play kubelet for a bound pod (admission → Allocate per container) over a
pipe, and gets back the admission result with the plugin's answers.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import attrs

from hami.errors import HamiError

log = logging.getLogger(__name__)


@attrs.frozen
class HostSpec:
    """What a worker needs to host its nodes (pickled: the first message to the worker)."""

    api_url: str
    nodes_file: str
    names: tuple[str, ...]
    public_pem: bytes
    backend_settings: Mapping[str, Any]
    usage_interval: float
    kubelet_poll_interval: float
    timeout: float
    switch_interval: float | None = None


def _host_main(conn: Connection, spec: HostSpec) -> None:  # pragma: no cover - runs in the child (covered by e2e)
    """The worker: start the shard's kubelets and agents, then answer admit/release until stop."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="nodehost %(levelname)s %(name)s: %(message)s")
    if spec.switch_interval is not None:
        sys.setswitchinterval(spec.switch_interval)
    from kubernetes import client

    from hami.backendkit.inventory import load_inventory
    from hami.fakes.kubelet import FakeKubelet
    from hami.kube import release
    from hami.node.agent import Agent, AgentOptions
    from hami.plugin.manager import load_backends
    from hami.wire.signing import SigningKeys, load_public_key

    root = Path(tempfile.mkdtemp(prefix="hh", dir="/tmp"))
    kubelets: dict[str, Any] = {}
    agents: dict[str, Any] = {}
    dirs: list[Path] = [root]
    try:
        key_file = root / "key.pem"
        key_file.write_bytes(spec.public_pem)
        keys = SigningKeys((load_public_key(key_file),))
        config = client.Configuration(host=spec.api_url)
        config.connection_pool_maxsize = 2 * len(spec.names) + 16
        config.api_key = {"BearerToken": "hami-kubeapi"}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        core_v1 = client.CoreV1Api(client.ApiClient(config))
        manager = load_backends()
        for backend in manager.backends:
            manager.configure(backend, {**(spec.backend_settings.get(backend) or {}), "inventory": spec.nodes_file})
        inventory = {n.name: n for n in load_inventory(Path(spec.nodes_file))}
        for name in spec.names:
            plugin_dir = Path(tempfile.mkdtemp(prefix="hs", dir="/tmp"))  # unix socket paths must stay short
            dirs.append(plugin_dir)
            kubelets[name] = FakeKubelet(plugin_dir, name, core_v1=core_v1).start()
            for patch in describe_node(inventory[name]):
                release(patch(core_v1))
            options = AgentOptions(
                node_name=name,
                device_plugin_dir=plugin_dir,
                health_interval=5.0,
                state_dir=plugin_dir / "state",
                usage_interval=spec.usage_interval,
                kubelet_poll_interval=spec.kubelet_poll_interval,
            )
            agents[name] = Agent(manager, core_v1, options, keys).start()
        deadline = time.monotonic() + spec.timeout
        for name, agent in agents.items():
            if not agent.node_registered.wait(max(deadline - time.monotonic(), 0.1)):
                raise HamiError(f"sandbox: the agent on node {name!r} did not register within {spec.timeout:.0f} s")
        conn.send(("ready", None))
        while True:
            try:
                op, node, pod = conn.recv()
            except EOFError:  # the main process is gone: stop with it
                break
            if op == "stop":
                break
            try:
                if op == "admit":
                    conn.send(("ok", kubelets[node].admit(pod)))
                elif op == "release":
                    kubelets[node].release(pod)
                    conn.send(("ok", None))
                else:
                    conn.send(("error", f"unknown node host request {op!r}"))
            except Exception as exc:  # the main process reports it against the pod
                conn.send(("error", f"node {node!r}: {type(exc).__name__}: {exc}"))
    except Exception as exc:
        log.exception("node host failed")
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        for agent in agents.values():
            agent.stop()
        for kubelet in kubelets.values():
            kubelet.stop()
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)


def describe_node(node: Any) -> list[Any]:
    """The inventory's labels, cpu and memory on the Node (what a kubelet started with them reports),
    as calls on a CoreV1Api returning raw responses (read each with :func:`hami.kube.release`)."""
    calls = [lambda api: api.patch_node(node.name, {"metadata": {"labels": dict(node.labels)}}, _preload_content=False)]
    sizes = {k: v for k, v in (("cpu", f"{node.cpu_milli}m"), ("memory", f"{node.memory}Mi")) if not v.startswith("0")}
    if sizes:
        calls.append(
            lambda api: api.patch_node_status(node.name, {"status": {"capacity": sizes, "allocatable": sizes}}, _preload_content=False)
        )
    return calls


@attrs.define
class _Host:
    process: Any
    conn: Connection
    names: tuple[str, ...]
    lock: threading.Lock = attrs.field(factory=threading.Lock)


class NodeHosts:
    """K worker processes hosting the sandbox's nodes; :meth:`admit` and :meth:`release` play kubelet."""

    def __init__(self, workers: int, *, reply_timeout: float = 120.0) -> None:
        if workers < 1:
            raise HamiError(f"node hosts: need at least one worker process; got {workers}")
        self.workers = workers
        self.reply_timeout = reply_timeout
        self._hosts: list[_Host] = []
        self._by_node: dict[str, _Host] = {}

    def start(self, specs: Sequence[HostSpec], timeout: float) -> NodeHosts:
        """Start one worker per spec and wait until every node in it registered (``timeout`` each)."""
        for spec in specs:
            parent, child = socket.socketpair()
            with child:
                process = subprocess.Popen(
                    [sys.executable, "-m", "hami.sandbox.nodehost", str(child.fileno())],
                    pass_fds=(child.fileno(),),
                    stdin=subprocess.DEVNULL,
                )
            host = _Host(process, Connection(parent.detach()), spec.names)
            host.conn.send(spec)
            self._hosts.append(host)
            self._by_node.update(dict.fromkeys(spec.names, host))
        for host in self._hosts:
            status, detail = self._reply(host, timeout + 60.0, "start")
            if status != "ready":
                raise HamiError(f"sandbox: a node host failed to start: {detail}")
        return self

    @staticmethod
    def shards(names: Sequence[str], workers: int) -> list[tuple[str, ...]]:
        """Nodes dealt round-robin over ``workers`` (none empty)."""
        return [s for s in (tuple(names[i::workers]) for i in range(workers)) if s]

    @property
    def pids(self) -> list[int]:
        return [h.process.pid for h in self._hosts]

    def __contains__(self, node: object) -> bool:
        return node in self._by_node

    def _reply(self, host: _Host, timeout: float, what: str) -> tuple[str, Any]:
        try:
            if not host.conn.poll(timeout):
                raise HamiError(f"sandbox: the node host of {', '.join(host.names[:3])}… did not answer {what} within {timeout:.0f} s")
            answer: tuple[str, Any] = host.conn.recv()
            return answer
        except (EOFError, OSError) as exc:
            raise HamiError(f"sandbox: the node host of {', '.join(host.names[:3])}… exited (code {host.process.poll()})") from exc

    def _call(self, op: str, node: str, pod: Mapping[str, Any]) -> Any:
        host = self._by_node.get(node)
        if host is None:
            raise HamiError(f"sandbox: no node host serves node {node!r}")
        with host.lock:
            try:
                host.conn.send((op, node, dict(pod)))
            except OSError as exc:
                raise HamiError(f"sandbox: the node host of {node!r} is gone (code {host.process.poll()})") from exc
            status, value = self._reply(host, self.reply_timeout, op)
        if status != "ok":
            raise HamiError(f"sandbox: {op} on node {node!r} failed: {value}")
        return value

    def admit(self, node: str, pod: Mapping[str, Any]) -> Any:
        """kubelet's admission of a pod bound to ``node``: an :class:`~hami.fakes.kubelet.admission.AdmissionResult`."""
        return self._call("admit", node, pod)

    def release(self, node: str, pod: Mapping[str, Any]) -> None:
        self._call("release", node, pod)

    def stop(self) -> None:
        for host in self._hosts:
            with host.lock:
                try:
                    host.conn.send(("stop", "", {}))
                except OSError:
                    pass
        for host in self._hosts:
            try:
                host.process.wait(30)
            except subprocess.TimeoutExpired:
                log.warning("node host %s did not stop in 30 s: killed", host.process.pid)
                host.process.kill()
                host.process.wait(5)
            host.conn.close()
        self._hosts.clear()
        self._by_node.clear()


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - the worker's entry (covered by e2e)
    """``python -m hami.sandbox.nodehost FD``: serve the spec that arrives first on the socket FD."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].isdigit():
        raise SystemExit(f"usage: python -m hami.sandbox.nodehost FD (a connected socket); got {args!r}")
    conn = Connection(int(args[0]))
    os.dup2(2, 1)  # stdout is not ours to write: anything printed goes to stderr
    from hami.sandbox import nodehost  # run as __main__: the pickled spec is the imported module's class

    spec = conn.recv()
    if not isinstance(spec, nodehost.HostSpec):
        raise SystemExit(f"nodehost: expected a HostSpec first; got a {type(spec).__name__}")
    nodehost._host_main(conn, spec)


if __name__ == "__main__":
    main()
