"""Device arrays travel as a header plus their bytes and come back on their kind of device.

CI has no GPU: two array classes here implement ``__cuda_array_interface__``
and ``__dlpack__`` over host memory, registered as kinds the way a user
registers another library. On a machine with CuPy or a CUDA PyTorch the same
tests also run on the real libraries (``benchmarks/gpu_check.py`` runs them
there); elsewhere those cases are skipped with a message.
"""

from __future__ import annotations

import ctypes
import json
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from warpstore import _gpu
from warpstore.connectors.local import LocalConnector
from warpstore.exceptions import SerializationError
from warpstore.serialize import deserialize, serialize
from warpstore.store import Store


class HostCudaArray:
    """``__cuda_array_interface__`` (version 3) over host memory, standing in for a GPU array."""

    def __init__(self, host: np.ndarray, device_id: int = 0) -> None:
        self._host = host
        self.device_id = device_id

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        h = self._host
        return {
            "shape": h.shape,
            "typestr": h.dtype.str,
            "data": (h.ctypes.data, False),
            "strides": None if h.flags.c_contiguous else h.strides,
            "version": 3,
        }

    def numpy(self) -> np.ndarray:
        return np.array(self._host)


class HostCudaKind(_gpu.InterfaceKind):
    name = "test_host_cuda"
    library = "numpy"
    label = "a test CUDA-interface array"
    array_type = HostCudaArray

    def __init__(self) -> None:
        self.copies: list[int] = []

    def memcpy(self, dst: int, src: int, nbytes: int) -> None:
        # The "device" is host memory here; on a GPU this is cudaMemcpy.
        self.copies.append(nbytes)
        ctypes.memmove(dst, src, nbytes)

    def from_host(self, data: memoryview, meta: dict[str, Any]) -> Any:
        host = np.frombuffer(data, dtype=np.dtype(meta["dtype"])).reshape(meta["shape"]).copy()
        return HostCudaArray(host, meta["device_id"])


class HostDLPackArray:
    """``__dlpack__`` over host memory (device type kDLCPU), as CPU-side array libraries do."""

    def __init__(self, host: np.ndarray) -> None:
        self._host = np.array(host, order="C")

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self._host.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)

    def numpy(self) -> np.ndarray:
        return np.array(self._host)


class HostDLPackKind(_gpu.InterfaceKind):
    name = "test_host_dlpack"
    library = "numpy"
    label = "a test DLPack array"
    array_type = HostDLPackArray

    def from_host(self, data: memoryview, meta: dict[str, Any]) -> Any:
        host = np.frombuffer(data, dtype=np.dtype(meta["dtype"])).reshape(meta["shape"])
        return HostDLPackArray(host.copy())


@dataclass
class Flavour:
    """How to make one kind of device array from numpy, read it back and check its device."""

    name: str
    make: Callable[[np.ndarray], Any]
    to_numpy: Callable[[Any], np.ndarray]
    device: Callable[[Any], str]
    strided: bool  # can it hold a non-contiguous view?


def _host_cuda() -> Flavour:
    return Flavour(
        "host-cuda-interface",
        lambda a: HostCudaArray(np.array(a, order="C")),
        lambda x: x.numpy(),
        lambda x: f"cuda:{x.device_id}",
        False,
    )


def _host_dlpack() -> Flavour:
    return Flavour("host-dlpack", HostDLPackArray, lambda x: x.numpy(), lambda x: "cpu", False)


def _cupy() -> Flavour:
    try:
        import cupy as cp

        if cp.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as e:
        pytest.skip(f"CuPy with a GPU is not available here ({type(e).__name__}: {e})")
    return Flavour("cupy", cp.asarray, cp.asnumpy, lambda x: f"cuda:{x.device.id}", True)


def _torch(device: str) -> Flavour:
    try:
        import torch
    except ImportError as e:
        pytest.skip(f"PyTorch is not installed here ({e})")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device here")

    def make(a: np.ndarray) -> Any:
        return torch.from_numpy(np.array(a)).to(device)

    def to_numpy(x: Any) -> np.ndarray:
        return np.asarray(x.detach().cpu().numpy())

    def where(x: Any) -> str:
        return str(x.device) if x.device.type == "cpu" else f"cuda:{x.device.index}"

    return Flavour(f"torch-{device}", make, to_numpy, where, True)


FLAVOURS: dict[str, Callable[[], Flavour]] = {
    "host-cuda-interface": _host_cuda,
    "host-dlpack": _host_dlpack,
    "cupy": _cupy,
    "torch-cuda": lambda: _torch("cuda"),
    "torch-cpu": lambda: _torch("cpu"),
}


@pytest.fixture
def host_kinds() -> Iterator[HostCudaKind]:
    cuda_kind = HostCudaKind()
    _gpu.register_kind(cuda_kind)
    _gpu.register_kind(HostDLPackKind())
    try:
        yield cuda_kind
    finally:
        _gpu.unregister_kind(HostCudaKind.name)
        _gpu.unregister_kind(HostDLPackKind.name)


@pytest.fixture(params=list(FLAVOURS))
def flavour(request: pytest.FixtureRequest, host_kinds: HostCudaKind) -> Flavour:
    return FLAVOURS[request.param]()


DTYPES = ["float32", "float64", "int8", "uint16", "int64", "complex64", "bool"]
SHAPES = [(), (0,), (7,), (3, 4), (2, 3, 5)]


def _sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(len(shape) * 31 + len(dtype))
    values = rng.integers(0, 100, size=shape)
    return np.asarray(values).astype(dtype)


def _header(message: Any) -> tuple[dict[str, Any], int]:
    view = memoryview(message).cast("B")
    (hlen,) = struct.unpack_from("<I", view, 1)
    return json.loads(bytes(view[5 : 5 + hlen])), 5 + hlen


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_keeps_kind_device_dtype_shape(
    flavour: Flavour, dtype: str, shape: tuple[int, ...]
) -> None:
    host = _sample(dtype, shape)
    obj = flavour.make(host)
    message = serialize(obj)
    assert bytes(memoryview(message)[:1]) == b"G"  # not pickled
    out = deserialize(message)
    assert type(out) is type(obj)
    assert flavour.device(out) == flavour.device(obj)
    back = flavour.to_numpy(out)
    assert back.dtype == host.dtype and back.shape == host.shape
    np.testing.assert_array_equal(back, host)


def test_message_is_header_plus_raw_aligned_bytes(flavour: Flavour) -> None:
    host = np.arange(1000, dtype=np.float32).reshape(10, 100)
    message = serialize(flavour.make(host))
    meta, start = _header(message)
    assert start % 64 == 0  # the payload is aligned for whoever maps it
    assert meta["shape"] == [10, 100]
    assert len(memoryview(message).cast("B")) == start + host.nbytes  # nothing else
    assert bytes(memoryview(message).cast("B")[start:]) == host.tobytes()


def test_non_contiguous_arrays_travel_in_c_order(flavour: Flavour) -> None:
    if not flavour.strided:
        pytest.skip(f"{flavour.name} arrays here are always contiguous")
    host = np.arange(60, dtype=np.int32).reshape(3, 4, 5)
    sliced = flavour.make(host)[:, ::2]
    # torch spells a general axis permutation "permute"; CuPy (like numpy) "transpose"
    obj = sliced.permute(2, 0, 1) if hasattr(sliced, "permute") else sliced.transpose(2, 0, 1)
    out = deserialize(serialize(obj))
    np.testing.assert_array_equal(flavour.to_numpy(out), host[:, ::2].transpose(2, 0, 1))


def test_device_bytes_are_copied_once(host_kinds: HostCudaKind) -> None:
    host = np.arange(4096, dtype=np.float64)
    serialize(HostCudaArray(host))
    assert host_kinds.copies == [host.nbytes]


def test_device_number_is_kept(host_kinds: HostCudaKind) -> None:
    out = deserialize(serialize(HostCudaArray(np.ones(3), device_id=1)))
    assert out.device_id == 1


def test_strided_cuda_interface_arrays_keep_the_old_path(host_kinds: HostCudaKind) -> None:
    # a CUDA-interface object this kind cannot read contiguously is pickled as before
    strided = HostCudaArray(np.arange(10.0)[::2])
    message = serialize(strided)
    assert bytes(memoryview(message)[:1]) == b"P"
    np.testing.assert_array_equal(deserialize(message).numpy(), np.arange(10.0)[::2])


def test_writable_result_independent_of_read_only_input(host_kinds: HostCudaKind) -> None:
    data = bytes(serialize(HostDLPackArray(np.arange(5.0))))
    out = deserialize(data)
    np.testing.assert_array_equal(out.numpy(), np.arange(5.0))


def test_reader_without_the_kind_gets_one_line(host_kinds: HostCudaKind) -> None:
    message = serialize(HostCudaArray(np.ones(4, dtype=np.float32), device_id=2))
    _gpu.unregister_kind(HostCudaKind.name)
    with pytest.raises(SerializationError) as info:
        deserialize(message)
    text = str(info.value)
    assert "\n" not in text and "test_host_cuda" in text and "cuda:2" in text


def _hand_made(meta: dict[str, Any], payload: bytes) -> bytes:
    header = json.dumps(meta).encode()
    header += b" " * (-(5 + len(header)) % 64)
    return b"G" + struct.pack("<I", len(header)) + header + payload


@pytest.mark.parametrize(
    ("library", "kind", "label"),
    [("cupy", "cupy", "CuPy array"), ("torch", "torch", "PyTorch tensor")],
)
def test_reader_without_the_gpu_library_is_told_in_one_line(
    monkeypatch: pytest.MonkeyPatch, library: str, kind: str, label: str
) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # makes "import library" fail
    message = _hand_made(
        {"kind": kind, "dtype": "float32", "shape": [2], "device": "cuda", "device_id": 1},
        bytes(8),
    )
    with pytest.raises(SerializationError) as info:
        deserialize(message)
    text = str(info.value)
    assert "\n" not in text
    assert label in text and "cuda:1" in text and library in text


@pytest.mark.parametrize(
    "message",
    [
        b"G" + struct.pack("<I", 1000) + b"{}",  # header longer than the message
        _hand_made({"dtype": "<f4", "shape": [1]}, bytes(4)),  # no kind
        _hand_made({"kind": "test_host_dlpack", "dtype": "<f4", "shape": [-1]}, b""),
        _hand_made({"kind": "test_host_dlpack", "dtype": "<f4", "shape": [3]}, bytes(4)),
        _hand_made({"kind": "nonesuch", "dtype": "<f4", "shape": [1]}, bytes(4)),
    ],
)
def test_malformed_messages_are_refused(host_kinds: HostCudaKind, message: bytes) -> None:
    with pytest.raises(SerializationError):
        deserialize(message)


def test_other_interface_objects_keep_their_type() -> None:
    # numpy subclasses and unregistered classes also have __dlpack__: they must
    # not be turned into something else
    class Sub(np.ndarray):
        pass

    sub = np.arange(3.0).view(Sub)
    out = deserialize(serialize(sub))
    assert type(out) is Sub
    np.testing.assert_array_equal(out, sub)


def test_through_a_store_and_a_proxy(flavour: Flavour, tmp_path: Any) -> None:
    host = np.arange(1 << 16, dtype=np.float32).reshape(256, 256)
    obj = flavour.make(host)
    with Store("gpu-test", LocalConnector(), cache_size=0) as store:
        key = store.put(obj)
        out = store.get(key)
        assert type(out) is type(obj) and flavour.device(out) == flavour.device(obj)
        np.testing.assert_array_equal(flavour.to_numpy(out), host)
        proxy = store.proxy(obj)
        assert flavour.device(proxy) == flavour.device(obj)  # resolves on access
        np.testing.assert_array_equal(flavour.to_numpy(proxy), host)
