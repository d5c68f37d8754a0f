"""``nvidia.com/gpumem: 3Gi`` over the real webhook HTTP path: a 403 at admission that says HAMi's unit
is MiB and what to write, for every backend of the usual shape; plain numbers (as the API server
writes them: 3000 arrives as 3k) are admitted.

Upstream: pkg/device/nvidia/device.go (v2.10.0) GenerateResourceRequests reads ``gpumem`` with
``AsInt64`` as MiB, so ``1Gi`` asks 1073741824 MiB (Pending everywhere) and ``3Gi``, past int32, drops
the container's device request with a log line; we refuse both at admission instead."""

from __future__ import annotations

from typing import Any

import pytest


def _pod(limits: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "train", "image": "cuda", "resources": {"limits": limits}}]},
    }


@pytest.mark.parametrize(
    ("limits", "name", "text", "mib"),
    [
        pytest.param({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3Gi"}, "nvidia.com/gpumem", "3Gi", 3072, id="nvidia-3Gi"),
        pytest.param({"nvidia.com/gpumem": "3000Mi"}, "nvidia.com/gpumem", "3000Mi", 3000, id="nvidia-Mi-refused-too"),
        pytest.param({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3G"}, "nvidia.com/gpumem", "3G", 2862, id="nvidia-decimal-G"),
        pytest.param({"hygon.com/dcunum": "1", "hygon.com/dcumem": "16Gi"}, "hygon.com/dcumem", "16Gi", 16384, id="hygon"),
        # Cambricon counts 256 MiB slices: the answer is the number of slices to write, not MiB
        pytest.param(
            {"cambricon.com/mlunum": "1", "cambricon.com/mlu.smlu.vmemory": "1Gi"},
            "cambricon.com/mlu.smlu.vmemory",
            "1Gi",
            4,
            id="cambricon-slices",
        ),
        pytest.param(
            {"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "2Gi"},
            "huawei.com/Ascend910B3-memory",
            "2Gi",
            2048,
            id="ascend",
        ),
    ],
)
def test_a_byte_quantity_is_denied_with_the_mib_to_write(
    webhook: Any, admit: Any, limits: dict[str, str], name: str, text: str, mib: int
) -> None:
    response = admit(webhook, _pod(limits))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    for fragment in ("container 'train'", f"{name}={text!r}", "MiB", f"write {name}: {mib}"):
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("value", ["3000", "3k", "3e3"])
def test_plain_numbers_are_admitted_however_written(webhook: Any, admit: Any, value: str) -> None:
    response = admit(webhook, _pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": value}))
    assert response["allowed"] is True, response.get("status")
