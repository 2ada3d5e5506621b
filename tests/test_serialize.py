"""serialize/deserialize round trips, fast paths and clear errors."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpstore.exceptions import SerializationError
from warpstore.serialize import deserialize, serialize

DTYPES = st.one_of(
    hnp.integer_dtypes(endianness="="),
    hnp.unsigned_integer_dtypes(endianness="="),
    hnp.floating_dtypes(endianness="=", sizes=(16, 32, 64)),
    hnp.complex_number_dtypes(endianness="="),
    hnp.boolean_dtypes(),
    hnp.datetime64_dtypes(endianness="="),
    hnp.byte_string_dtypes(endianness="="),
    hnp.unicode_string_dtypes(endianness="="),
    hnp.integer_dtypes(endianness=">"),
)


def roundtrip(obj: Any) -> Any:
    return deserialize(serialize(obj))


@given(st.binary())
def test_bytes(data: bytes) -> None:
    out = roundtrip(data)
    assert out == data and type(out) is bytes
    assert roundtrip(bytearray(data)) == data
    assert roundtrip(memoryview(data)) == data


@given(st.text())
def test_str(text: str) -> None:
    out = roundtrip(text)
    assert out == text and type(out) is str


def test_str_with_lone_surrogate() -> None:
    assert roundtrip("a\ud800b") == "a\ud800b"


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)))
def test_numpy_arrays(arr: np.ndarray) -> None:
    out = roundtrip(arr)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=3, min_side=2, max_side=8)),
    st.integers(min_value=1, max_value=3),
)
def test_non_contiguous_views(arr: np.ndarray, step: int) -> None:
    for view in (arr[::step], arr.T, arr[..., ::step], np.asfortranarray(arr)):
        out = roundtrip(view)
        np.testing.assert_array_equal(out, view)


nested = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=20,
)


@given(nested)
def test_nested_containers(obj: Any) -> None:
    assert roundtrip(obj) == obj


def test_containers_with_arrays_use_out_of_band_buffers() -> None:
    obj = {"w": np.arange(1000.0), "b": [np.ones((3, 3), dtype=np.int8)]}
    out = roundtrip(obj)
    np.testing.assert_array_equal(out["w"], obj["w"])
    np.testing.assert_array_equal(out["b"][0], obj["b"][0])
    out["w"][0] = 5  # writable


def test_fast_paths_do_not_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle used on a fast path")

    monkeypatch.setattr(pickle, "dumps", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    assert roundtrip(b"x") == b"x"
    assert roundtrip("x") == "x"
    np.testing.assert_array_equal(roundtrip(np.arange(5)), np.arange(5))


def test_numpy_zero_copy_from_writable_buffer() -> None:
    data = serialize(np.arange(1 << 20, dtype=np.uint8))
    out = deserialize(data)
    assert np.shares_memory(out, np.frombuffer(data, dtype=np.uint8))


def test_read_only_buffer_gives_writable_independent_array() -> None:
    data = bytes(serialize(np.arange(10)))
    out = deserialize(data)
    out[0] = 99
    assert deserialize(data)[0] == 0


def test_object_arrays_and_lambdas_fall_back() -> None:
    arr = np.array([{"a": 1}, None], dtype=object)
    assert roundtrip(arr)[0] == {"a": 1}
    assert roundtrip(lambda x: x * 3)(2) == 6  # cloudpickle


def test_unpicklable_object_names_its_type() -> None:
    with pytest.raises(SerializationError, match=r"_thread\.lock"):
        serialize(threading.Lock())


@pytest.mark.parametrize(
    "data",
    [b"", b"Z123", b"N\x05\x00\x00\x00{'x'}", b"P\x01\x00\x00\x00", b"N\xff\xff\xff\xff"],
)
def test_malformed_data_is_a_clear_error(data: bytes) -> None:
    with pytest.raises(SerializationError):
        deserialize(data)


def test_numpy_header_is_never_evaluated_as_code() -> None:
    header = b"__import__('os').system('touch /tmp/warpstore-pwned')"
    data = b"N" + len(header).to_bytes(4, "little") + header
    with pytest.raises(SerializationError):
        deserialize(data)


@pytest.mark.parametrize("shape", [(1,), (3,), (7, 5), (1000,), (2, 3, 4)])
@pytest.mark.parametrize("dtype", ["u1", "i4", "f8", "c16", "<U3"])
def test_numpy_data_is_64_byte_aligned(shape: tuple[int, ...], dtype: str) -> None:
    """Whatever the header length, the payload starts on a 64-byte boundary."""
    arr = np.zeros(shape, dtype=dtype)
    payload = bytearray(serialize(arr))
    base = np.frombuffer(payload, dtype=np.uint8)
    offset = len(payload) - arr.nbytes
    assert offset % 64 == 0
    out = deserialize(payload)
    assert out.flags.aligned and out.flags.writeable
    # zero-copy: the array lies inside the payload, at its aligned offset
    assert out.__array_interface__["data"][0] == base.ctypes.data + offset
    np.testing.assert_array_equal(out, arr)
