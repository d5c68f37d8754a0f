"""Kubelet's client side of one registered plugin: dial back, fetch options, keep ListAndWatch open.

One :class:`PluginEndpoint` per registered resource, like kubelet's ``endpointImpl``. The stream runs on
the fake kubelets' shared asyncio loop (:mod:`.aioloop`: an idle stream costs no thread and no
wake-ups); every message replaces the whole device list and is reported through ``on_update``, which
runs in the loop's executor (it may call the API server). Unary calls use a synchronous channel,
which keeps no thread while no call is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc

from hami.node.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc

from . import aioloop

log = logging.getLogger(__name__)

#: Timeout kubelet applies to PreStartContainer; we use it for every unary call to the plugin.
CALL_TIMEOUT_S = 30.0


class PluginEndpoint:
    """A connection from the (fake) kubelet to one plugin's socket."""

    def __init__(
        self,
        resource: str,
        socket_path: Path,
        on_update: Callable[[PluginEndpoint], None],
        on_stream_end: Callable[[PluginEndpoint], None],
    ) -> None:
        self.resource = resource
        self.socket_path = Path(socket_path)
        self.options = api_pb2.DevicePluginOptions()
        self.devices: dict[str, api_pb2.Device] = {}
        self.stopped = False
        self._on_update = on_update
        self._on_stream_end = on_stream_end
        self._channel: grpc.Channel | None = None
        self._stub: api_pb2_grpc.DevicePluginStub | None = None
        self._call: grpc.aio.UnaryStreamCall | None = None
        self._watching: futures.Future[None] | None = None
        self._closing = False
        self._lock = threading.Lock()

    @property
    def stub(self) -> api_pb2_grpc.DevicePluginStub:
        assert self._stub is not None, "endpoint not connected"
        return self._stub

    def connect(self, timeout: float) -> None:
        """Dial the plugin (blocking, like kubelet's ``grpc.WithBlock``) and fetch its options.

        Raises ``grpc.RpcError``; code ``DEADLINE_EXCEEDED`` when the socket could not be reached in time.
        """
        self._channel = grpc.insecure_channel(f"unix://{self.socket_path}")
        try:
            # wait_for_ready rather than channel_ready_future: the latter's polling thread makes close() slow.
            self._stub = api_pb2_grpc.DevicePluginStub(self._channel)
            self.options = self._stub.GetDevicePluginOptions(api_pb2.Empty(), timeout=timeout, wait_for_ready=True)
        except BaseException:
            self._channel.close()
            raise

    def start_watch(self) -> None:
        """Open the ListAndWatch stream on the shared loop."""
        self._watching = aioloop.spawn(self._watch())

    async def _watch(self) -> None:
        channel = grpc.aio.insecure_channel(f"unix://{self.socket_path}")
        try:
            with self._lock:
                if self._closing:
                    return
                self._call = api_pb2_grpc.DevicePluginStub(channel).ListAndWatch(api_pb2.Empty())
            async for response in self._call:
                self.devices = {d.ID: d for d in response.devices}
                log.debug("%s: ListAndWatch sent %d devices", self.resource, len(self.devices))
                await asyncio.to_thread(self._on_update, self)
        except grpc.RpcError as err:
            if not self._closing:
                log.info("%s: ListAndWatch stream ended: %s", self.resource, err.code())
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug in a callback must not be silent
            log.exception("%s: ListAndWatch handler failed", self.resource)
        else:
            log.info("%s: plugin closed its ListAndWatch stream", self.resource)
        finally:
            await channel.close()
        self.stopped = True
        if not self._closing:
            await asyncio.to_thread(self._on_stream_end, self)

    def close(self) -> None:
        """Cancel the stream and close the channel without reporting the stream's end."""
        with self._lock:
            ended = self.stopped  # the stream is over: its end callback may be who is closing us, do not wait on it
            self._closing = True
            self.stopped = True
            call = self._call
        if call is not None:
            aioloop.loop().call_soon_threadsafe(call.cancel)
        if self._channel is not None:
            self._channel.close()
        if self._watching is not None and not ended and not aioloop.on_loop():
            try:
                self._watching.result(timeout=5)
            except (futures.TimeoutError, futures.CancelledError):
                log.warning("%s: ListAndWatch stream did not end within 5 s of close", self.resource)
