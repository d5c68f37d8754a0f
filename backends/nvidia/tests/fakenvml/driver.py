"""Runs the real backend against whatever ``libnvidia-ml.so.1`` the loader finds (the tests put the
fake first on LD_LIBRARY_PATH) and prints what it saw as JSON. Run as a script, in a subprocess,
because nvidia-ml-py loads the library by name once per process.

    python driver.py discover '<config json>'
    python driver.py health '<config json>' <events wanted> <seconds>
    python driver.py usage '<config json>' [<rounds>]
"""

from __future__ import annotations

import json
import logging
import sys
import time

import attrs

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")

from hami.errors import HamiError  # noqa: E402
from hami.plugin.manager import BackendManager  # noqa: E402
from hami_nvidia.plugin import INFO, NvidiaBackend  # noqa: E402

NODE = "gpu-node-1"


def main() -> None:
    action, config = sys.argv[1], json.loads(sys.argv[2])
    backend = NvidiaBackend(INFO)
    manager = BackendManager(strict=True, allow=(), deny=(), builtins=False)
    manager.register(backend, distribution="hami-nvidia")
    manager.configure("nvidia", config)
    try:
        listed = manager.discover("nvidia", NODE, unadvertised=True)
    except HamiError as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return
    devices = [d for d in listed if d.advertised]
    unadvertised = [
        {"id": d.id, "index": d.index, "type": d.type, "healthy": d.healthy, "reason": d.reason} for d in listed if not d.advertised
    ]
    if action == "discover":
        split = [manager.split(d, NODE) for d in devices]
        print(
            json.dumps(
                {
                    "devices": [
                        {
                            "id": d.id,
                            "type": d.type,
                            "memory": d.memory,
                            "index": d.index,
                            "numa": d.numa,
                            "healthy": d.healthy,
                            "attributes": dict(d.attributes),
                        }
                        for d in devices
                    ],
                    "split": [
                        {
                            "id": s.id,
                            "count": s.count,
                            "memory": s.memory,
                            "cores": s.cores,
                            "mode": s.mode,
                            "partitions": list(s.partitions),
                        }
                        for s in split
                    ],
                    "annotations": manager.node_annotations("nvidia", split, devices),
                    "unadvertised": unadvertised,
                }
            )
        )
    elif action == "usage":
        rounds = [manager.sample_usage("nvidia", devices, [], NODE) for _ in range(int(sys.argv[3]) if len(sys.argv) > 3 else 1)]
        backend.close()
        print(json.dumps({"rounds": [{"devices": [attrs.asdict(d) for d in r.devices], "skipped": list(r.skipped)} for r in rounds]}))
    elif action == "health":
        wanted, seconds = int(sys.argv[3]), float(sys.argv[4])
        events: list[dict] = []
        deadline = time.monotonic() + seconds
        while len(events) < wanted and time.monotonic() < deadline:
            events += [{"id": e.device_id, "healthy": e.healthy, "reason": e.reason} for e in manager.device_health("nvidia", devices)]
            time.sleep(0.02)
        backend.close()
        print(json.dumps({"events": events, "watcher_error": backend._watcher.error if backend._watcher else None}))


if __name__ == "__main__":
    main()
