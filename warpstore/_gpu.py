"""Device arrays (CuPy, PyTorch, JAX, Numba) as a small header plus their bytes.

Pickling a CUDA array costs three to five times its device-to-host copy (the
library builds a host array, pickle copies it into its stream, the stream is
copied into the message). Here an array is copied *once*, from the device
straight into the outgoing message, after a JSON header that says which
library it came from, its dtype, shape and device; on the way back it is
copied once from the message to a new array on the same kind of device (a
CuPy array for a CuPy array, a ``cuda:N`` tensor for a CUDA tensor). The
header is JSON, never pickle: a message can only name one of the registered
*kinds*, and a kind only rebuilds arrays.

Message layout (tag ``b'G'`` in :mod:`warpstore.serialize`)::

    b'G' | u32 header length | JSON header, space-padded | raw bytes, C order
                                                         ^ 64-byte aligned

Header keys: ``kind`` (registered kind name), ``dtype`` (the library's dtype
name), ``shape``, ``device`` (``"cuda"``, ``"cpu"``, ...), ``device_id`` and
kind-specific extras (PyTorch: ``requires_grad``).

Which objects go this way: instances of a registered kind only. Built in are
CuPy arrays, plain ``torch.Tensor`` (CPU and CUDA; subclasses such as
``nn.Parameter`` keep pickle, which preserves their class), single-device JAX
arrays and contiguous Numba device arrays. Anything else that exposes
``__cuda_array_interface__`` or ``__dlpack__`` (a numpy subclass, say) keeps
its old path, so nothing that used to round-trip changes type. Other
libraries plug in with :func:`register_kind`; :class:`InterfaceKind` does the
device-to-host copy from the interfaces themselves.

The libraries are never imported by this module: a kind only looks at
``sys.modules`` when serializing (an object of a library can only exist if
the library was imported) and imports the library when a reader rebuilds an
array. A reader without it gets one line naming the library.
"""

from __future__ import annotations

import json
import struct
import sys
import warnings
from collections.abc import Callable
from typing import Any

from warpstore.exceptions import SerializationError

__all__ = [
    "TAG",
    "DeviceArrayKind",
    "InterfaceKind",
    "deserialize_device_array",
    "find_kind",
    "register_kind",
    "serialize_device_array",
    "unregister_kind",
]

TAG = b"G"
_U32 = struct.Struct("<I")
_ALIGN = 64
_MAX_HEADER = 64 * 1024


class DeviceArrayKind:
    """How one library's arrays become bytes and back.

    Subclasses set :attr:`name` (written into each message), :attr:`library`
    (the module a reader must be able to import) and implement the four
    methods. ``describe`` returns ``None`` for objects this kind declines (a
    sharded JAX array, a tensor subclass): they keep the pickle path.
    """

    name = ""
    library = ""
    label = ""  # how the one-line error calls these objects, e.g. "a CuPy array"

    def matches(self, obj: Any) -> bool:
        raise NotImplementedError

    def describe(self, obj: Any) -> dict[str, Any] | None:
        raise NotImplementedError

    def nbytes(self, obj: Any, meta: dict[str, Any]) -> int:
        raise NotImplementedError

    def copy_to_host(self, obj: Any, out: memoryview, meta: dict[str, Any]) -> None:
        """Copy the array's bytes (C order) into ``out``, which is exactly ``nbytes`` long."""
        raise NotImplementedError

    def from_host(self, data: memoryview, meta: dict[str, Any]) -> Any:
        """A new array on ``meta``'s kind of device, holding ``data`` (C order)."""
        raise NotImplementedError

    def import_library(self, meta: dict[str, Any]) -> Any:
        try:
            return __import__(self.library)
        except ImportError as e:
            where = _where(meta)
            raise SerializationError(
                f"this object is {self.label or self.name}{where}; reading it needs "
                f"{self.library}, which cannot be imported here ({e})"
            ) from None


def _where(meta: dict[str, Any]) -> str:
    device = meta.get("device")
    if not device:
        return ""
    if device == "cpu":
        return " in host memory"
    return f" on {device}:{meta.get('device_id', 0)}"


def _numpy() -> Any:
    import numpy as np

    return np


def _module_root(obj: Any) -> str:
    return type(obj).__module__.partition(".")[0]


class CuPyKind(DeviceArrayKind):
    name = "cupy"
    library = "cupy"
    label = "a CuPy array"

    def matches(self, obj: Any) -> bool:
        cp = sys.modules.get("cupy")
        return cp is not None and type(obj) is cp.ndarray

    def describe(self, obj: Any) -> dict[str, Any] | None:
        if obj.dtype.hasobject:
            return None
        return {
            "dtype": obj.dtype.str,
            "shape": list(obj.shape),
            "device": "cuda",
            "device_id": int(obj.device.id),
        }

    def nbytes(self, obj: Any, meta: dict[str, Any]) -> int:
        return int(obj.nbytes)

    def copy_to_host(self, obj: Any, out: memoryview, meta: dict[str, Any]) -> None:
        np = _numpy()
        cp = sys.modules["cupy"]
        if obj.size == 0:
            return
        with cp.cuda.Device(obj.device.id):
            src = cp.ascontiguousarray(obj)  # a device-side copy only if strided
            host = np.frombuffer(out, dtype=src.dtype).reshape(src.shape)
            src.get(out=host)

    def from_host(self, data: memoryview, meta: dict[str, Any]) -> Any:
        cp = self.import_library(meta)
        np = _numpy()
        dtype = np.dtype(meta["dtype"])
        shape = tuple(meta["shape"])
        host = np.frombuffer(data, dtype=dtype).reshape(shape)
        with cp.cuda.Device(_device_id(meta, cp.cuda.runtime.getDeviceCount())):
            out = cp.empty(shape, dtype=dtype)
            if out.size:
                out.set(host)
            return out


def _device_id(meta: dict[str, Any], count: int) -> int:
    """The writer's device number, or 0 where this node has fewer devices."""
    wanted = int(meta.get("device_id", 0))
    return wanted if 0 <= wanted < count else 0


class TorchKind(DeviceArrayKind):
    name = "torch"
    library = "torch"
    label = "a PyTorch tensor"

    def matches(self, obj: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and type(obj) is torch.Tensor

    def describe(self, obj: Any) -> dict[str, Any] | None:
        if (
            obj.layout is not sys.modules["torch"].strided
            or obj.is_quantized
            or obj.device.type not in ("cpu", "cuda")
        ):
            return None  # sparse, quantized, MPS, XPU...: torch's own pickling knows them
        return {
            "dtype": str(obj.dtype).removeprefix("torch."),
            "shape": list(obj.shape),
            "device": obj.device.type,
            "device_id": obj.device.index or 0,
            "requires_grad": bool(obj.requires_grad),
        }

    def nbytes(self, obj: Any, meta: dict[str, Any]) -> int:
        return int(obj.numel() * obj.element_size())

    def copy_to_host(self, obj: Any, out: memoryview, meta: dict[str, Any]) -> None:
        torch = sys.modules["torch"]
        if obj.numel() == 0:
            return
        src = obj.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
        dst = torch.frombuffer(out, dtype=torch.uint8)
        dst.copy_(src.view(torch.uint8))

    def from_host(self, data: memoryview, meta: dict[str, Any]) -> Any:
        torch = self.import_library(meta)
        dtype = getattr(torch, str(meta["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise SerializationError(f"unknown torch dtype {meta['dtype']!r}")
        shape = tuple(meta["shape"])
        if data.nbytes == 0:
            flat = torch.empty(0, dtype=dtype)
        else:
            with warnings.catch_warnings():
                # frombuffer warns about read-only buffers; we copy those below
                warnings.simplefilter("ignore", UserWarning)
                flat = torch.frombuffer(data, dtype=torch.uint8).view(dtype)
        tensor = flat.reshape(shape)
        if meta.get("device") == "cuda":
            if torch.cuda.is_available():
                index = _device_id(meta, torch.cuda.device_count())
                tensor = tensor.to(f"cuda:{index}")
            else:
                raise SerializationError(
                    f"this object is a PyTorch tensor{_where(meta)}; this process's torch "
                    "sees no CUDA device"
                )
        elif data.readonly or data.nbytes == 0:
            tensor = tensor.clone()  # writable and independent, like pickle's result
        if meta.get("requires_grad"):
            tensor.requires_grad_(True)
        return tensor


class JAXKind(DeviceArrayKind):
    name = "jax"
    library = "jax"
    label = "a JAX array"

    def matches(self, obj: Any) -> bool:
        jax = sys.modules.get("jax")
        return (
            jax is not None
            and _module_root(obj) in ("jax", "jaxlib")
            and (isinstance(obj, jax.Array))
        )

    def describe(self, obj: Any) -> dict[str, Any] | None:
        devices = list(obj.devices())
        if len(devices) != 1:
            return None  # sharded: jax's own pickling keeps the sharding
        device = devices[0]
        return {
            "dtype": obj.dtype.name,
            "shape": list(obj.shape),
            "device": "cuda" if device.platform == "gpu" else device.platform,
            "device_id": int(device.id),
        }

    def nbytes(self, obj: Any, meta: dict[str, Any]) -> int:
        return int(obj.nbytes)

    def copy_to_host(self, obj: Any, out: memoryview, meta: dict[str, Any]) -> None:
        np = _numpy()
        host = np.asarray(obj)  # JAX offers no copy into a caller's buffer
        np.frombuffer(out, dtype=host.dtype).reshape(host.shape)[...] = host

    def from_host(self, data: memoryview, meta: dict[str, Any]) -> Any:
        jax = self.import_library(meta)
        import jax.numpy as jnp

        np = _numpy()
        host = np.frombuffer(data, dtype=jnp.dtype(meta["dtype"])).reshape(meta["shape"])
        platform = "gpu" if meta.get("device") == "cuda" else meta.get("device", "cpu")
        try:
            devices = jax.devices(platform)
        except RuntimeError:
            raise SerializationError(
                f"this object is a JAX array{_where(meta)}; this process's jax has no "
                f"{platform} device"
            ) from None
        return jax.device_put(host, devices[_device_id(meta, len(devices))])


class NumbaKind(DeviceArrayKind):
    name = "numba"
    library = "numba.cuda"
    label = "a Numba CUDA device array"

    def matches(self, obj: Any) -> bool:
        return _module_root(obj) == "numba" and hasattr(type(obj), "copy_to_host")

    def describe(self, obj: Any) -> dict[str, Any] | None:
        if not obj.is_c_contiguous():
            return None
        return {
            "dtype": obj.dtype.str,
            "shape": list(obj.shape),
            "device": "cuda",
            "device_id": 0,
        }

    def nbytes(self, obj: Any, meta: dict[str, Any]) -> int:
        return int(obj.nbytes)

    def copy_to_host(self, obj: Any, out: memoryview, meta: dict[str, Any]) -> None:
        np = _numpy()
        if obj.size:
            obj.copy_to_host(ary=np.frombuffer(out, dtype=obj.dtype).reshape(obj.shape))

    def from_host(self, data: memoryview, meta: dict[str, Any]) -> Any:
        try:
            from numba import cuda
        except ImportError as e:
            raise SerializationError(
                f"this object is {self.label}; reading it needs numba, which cannot be "
                f"imported here ({e})"
            ) from None
        np = _numpy()
        host = np.frombuffer(data, dtype=np.dtype(meta["dtype"])).reshape(meta["shape"])
        return cuda.to_device(host)


class InterfaceKind(DeviceArrayKind):
    """A kind that reads arrays through ``__cuda_array_interface__`` or ``__dlpack__``.

    Subclasses name the class they take (:attr:`array_type`) and say how to
    build one from host data (:meth:`from_host`); the bytes are read through
    the interfaces. ``__dlpack__`` arrays in host memory (device type 1, or 3
    for pinned CUDA host memory) are read with ``numpy.from_dlpack``;
    ``__cuda_array_interface__`` arrays are read with :meth:`memcpy`, which by
    default is CUDA's ``cudaMemcpy`` (through CuPy, the one library that
    exposes it) and which a kind whose "device" is host memory replaces.
    """

    array_type: type = object

    def matches(self, obj: Any) -> bool:
        return type(obj) is self.array_type

    def describe(self, obj: Any) -> dict[str, Any] | None:
        np = _numpy()
        cai = getattr(obj, "__cuda_array_interface__", None)
        if cai is not None:
            dtype = np.dtype(cai["typestr"])
            shape = tuple(cai["shape"])
            strides = cai.get("strides")
            if strides is not None and tuple(strides) != _c_strides(shape, dtype.itemsize):
                return None
            return {
                "dtype": dtype.str,
                "shape": list(shape),
                "device": "cuda",
                "device_id": int(getattr(obj, "device_id", 0)),
            }
        host = self._dlpack_host(obj)
        if host is None:
            return None
        return {"dtype": host.dtype.str, "shape": list(host.shape), "device": "cpu"}

    def _dlpack_host(self, obj: Any) -> Any:
        if not hasattr(obj, "__dlpack__"):
            return None
        device_type, _ = obj.__dlpack_device__()
        if device_type not in (1, 3):  # kDLCPU, kDLCUDAHost
            return None
        return _numpy().from_dlpack(obj)

    def nbytes(self, obj: Any, meta: dict[str, Any]) -> int:
        np = _numpy()
        count = 1
        for dim in meta["shape"]:
            count *= int(dim)
        return count * int(np.dtype(meta["dtype"]).itemsize)

    def copy_to_host(self, obj: Any, out: memoryview, meta: dict[str, Any]) -> None:
        np = _numpy()
        if not out.nbytes:
            return
        cai = getattr(obj, "__cuda_array_interface__", None)
        if cai is not None:
            dst = np.frombuffer(out, dtype=np.uint8)
            self.memcpy(dst.ctypes.data, int(cai["data"][0]), out.nbytes)
            return
        host = self._dlpack_host(obj)
        np.frombuffer(out, dtype=host.dtype).reshape(host.shape)[...] = host

    def memcpy(self, dst: int, src: int, nbytes: int) -> None:
        """Copy ``nbytes`` from device pointer ``src`` to host pointer ``dst``."""
        try:
            import cupy
        except ImportError:
            raise SerializationError(
                f"copying {self.name} arrays from the GPU needs cupy (for cudaMemcpy)"
            ) from None
        cupy.cuda.runtime.memcpy(dst, src, nbytes, 4)  # cudaMemcpyDefault


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    step = itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


_KINDS: dict[str, DeviceArrayKind] = {}


def register_kind(kind: DeviceArrayKind) -> None:
    """Let objects that ``kind`` matches be stored as device arrays (replaces a same-named one)."""
    if not kind.name or not kind.name.isidentifier():
        raise ValueError(f"a device-array kind needs an identifier as its name, not {kind.name!r}")
    _KINDS[kind.name] = kind


def unregister_kind(name: str) -> None:
    _KINDS.pop(name, None)


for _kind in (CuPyKind(), TorchKind(), JAXKind(), NumbaKind()):
    register_kind(_kind)


def find_kind(obj: Any) -> DeviceArrayKind | None:
    """The registered kind that takes ``obj``, or ``None``.

    Cheap for ordinary objects: only types with one of the two interfaces
    (or a registered kind's own test) are looked at further.
    """
    cls = type(obj)
    if not (hasattr(cls, "__cuda_array_interface__") or hasattr(cls, "__dlpack__")):
        return None
    for kind in _KINDS.values():
        try:
            if kind.matches(obj):
                return kind
        except Exception:
            continue
    return None


Allocator = Callable[[int], "memoryview | bytearray"]


def serialize_device_array(obj: Any, allocate: Allocator) -> memoryview | bytearray | None:
    """``obj`` as one message, or ``None`` when no registered kind takes it.

    ``allocate(n)`` returns a writable buffer of ``n`` bytes (uninitialised is
    fine): the header is written into it and the array copied from the device
    straight behind it.
    """
    kind = find_kind(obj)
    if kind is None:
        return None
    meta = kind.describe(obj)
    if meta is None:
        return None
    meta = {"kind": kind.name, **meta}
    header = json.dumps(meta, separators=(",", ":")).encode("ascii")
    header += b" " * (-(1 + _U32.size + len(header)) % _ALIGN)
    start = 1 + _U32.size + len(header)
    size = kind.nbytes(obj, meta)
    out = allocate(start + size)
    view = out if isinstance(out, memoryview) else memoryview(out)
    view[:1] = TAG
    _U32.pack_into(view, 1, len(header))
    view[1 + _U32.size : start] = header
    kind.copy_to_host(obj, view[start:], meta)
    return out


def deserialize_device_array(view: memoryview) -> Any:
    """Rebuild the array of a ``b'G'`` message on its kind of device."""
    (hlen,) = _U32.unpack_from(view, 1)
    start = 1 + _U32.size
    if hlen > _MAX_HEADER or start + hlen > view.nbytes:
        raise SerializationError(f"device-array header of {hlen} bytes does not fit the message")
    meta = json.loads(bytes(view[start : start + hlen]))
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str):
        raise SerializationError("malformed device-array header")
    shape = meta.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SerializationError(f"malformed device-array shape {shape!r}")
    kind = _KINDS.get(meta["kind"])
    if kind is None:
        raise SerializationError(
            f"this object is a device array of kind {meta['kind']!r}{_where(meta)}, which "
            "no registered kind here can rebuild"
        )
    data = view[start + hlen :]
    return kind.from_host(data, meta)
