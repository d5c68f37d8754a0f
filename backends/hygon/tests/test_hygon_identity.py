"""The Hygon backend speaks HAMi's names and registers in the legacy CSV format."""

from __future__ import annotations

from hami.sdk import PhysicalDevice
from hami.wire.codec import decode_node_devices, encode_node_devices
from hami_hygon.plugin import KIND, plugin


def test_hami_wire_names():
    assert KIND.vendor == "DCU"
    assert KIND.resources.all() == ("hygon.com/dcunum", "hygon.com/dcumem", "hygon.com/dcucores")
    assert KIND.annotations.node_register == "hami.io/node-dcu-register"
    assert KIND.annotations.handshake == "hami.io/node-handshake-dcu"
    assert KIND.annotations.to_allocate == "hami.io/dcu-devices-to-allocate"
    assert KIND.node_encoding == "csv"


def test_registration_is_csv(hami_manager, register_backend):
    register_backend(plugin, config={"split_count": 4})
    split = hami_manager.split(PhysicalDevice(id="DCU-0", vendor="DCU", type="DCU-Z100", memory=16368, index=0))
    text = encode_node_devices([split], KIND.node_encoding)
    assert text == "DCU-0,4,16368,100,DCU-Z100,0,true,0,:"
    assert decode_node_devices(text, "DCU", "csv") == (split,)
