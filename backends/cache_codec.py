"""How cached values look outside the process: stable keys and msgpack frames.

Keys are a blake2b digest of a canonical msgpack encoding of (kind, key) under a
versioned namespace, so every process (and every Python version) computes the same key,
and a change of row shapes or schema moves to a new namespace instead of reading old
shapes. Python's `hash()` is salted per process and never used.

A frame is one flag byte and a msgpack body, zstd-compressed above a size threshold.
Decimals, datetimes and dates travel as msgpack extension types (never pickle).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import msgpack
import zstandard

CACHE_FORMAT = 1  # bump when the cached shape of any value changes
RAW, ZSTD = 0, 1
_DECIMAL, _DATETIME, _DATE = 1, 2, 3
_compressor = zstandard.ZstdCompressor(level=3)
_decompressor = zstandard.ZstdDecompressor()


def namespace(prefix: str, schema_version: str) -> str:
    """`prefix:v<format>-<digest>`: a new format or schema version gets fresh keys."""
    digest = hashlib.blake2b(f"{CACHE_FORMAT}:{schema_version}".encode(), digest_size=6).hexdigest()
    return f"{prefix}:v{CACHE_FORMAT}-{digest}"


def _canonical(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    if isinstance(value, Mapping):
        return sorted((str(k), _canonical(v)) for k, v in value.items())
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, Decimal | datetime | date):
        return f"{type(value).__name__}:{value.isoformat() if isinstance(value, date) else value}"
    raise TypeError(f"cache keys are built from plain values; got {type(value).__name__}")


def cache_key(ns: str, kind: str, key: Hashable) -> str:
    """The key of one entry: `<namespace>:<kind>:<blake2b of canonical (kind, key)>`."""
    body = msgpack.packb([kind, _canonical(key)], use_bin_type=True)
    return f"{ns}:{kind}:{hashlib.blake2b(body, digest_size=16).hexdigest()}"


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return msgpack.ExtType(_DECIMAL, str(value).encode())
    if isinstance(value, datetime):
        return msgpack.ExtType(_DATETIME, value.isoformat().encode())
    if isinstance(value, date):
        return msgpack.ExtType(_DATE, value.isoformat().encode())
    if isinstance(value, Mapping):  # asyncpg.Record and friends
        return dict(value)
    raise TypeError(f"cannot cache a {type(value).__name__}")


def _ext(code: int, data: bytes) -> Any:
    text = data.decode()
    if code == _DECIMAL:
        return Decimal(text)
    if code == _DATETIME:
        return datetime.fromisoformat(text)
    if code == _DATE:
        return date.fromisoformat(text)
    return msgpack.ExtType(code, data)


def pack(value: Any) -> bytes:
    """msgpack bytes of a plain value (dicts, lists, scalars, Decimal, datetime, date)."""
    return msgpack.packb(value, default=_default, use_bin_type=True, datetime=False)


def unpack(body: bytes) -> Any:
    return msgpack.unpackb(body, ext_hook=_ext, raw=False, strict_map_key=False)


def encode_frame(body: bytes, compress_above: int) -> bytes:
    """One flag byte, then the body, zstd-compressed when longer than `compress_above`."""
    if len(body) > compress_above:
        return bytes((ZSTD,)) + _compressor.compress(body)
    return bytes((RAW,)) + body


def decode_frame(frame: bytes) -> bytes:
    flag, body = frame[0], frame[1:]
    if flag == ZSTD:
        return _decompressor.decompress(body)
    if flag != RAW:
        raise ValueError(f"unknown cache frame flag {flag}")
    return body


def encode_entry(gen: int, tags: Sequence[str], value: Any, compress_above: int) -> bytes:
    """An L2 entry: [generation it was read at, its tags, the value]."""
    return encode_frame(pack([gen, list(tags), value]), compress_above)


def decode_entry(frame: bytes) -> tuple[int, tuple[str, ...], Any]:
    gen, tags, value = unpack(decode_frame(frame))
    return int(gen), tuple(tags), value
