"""A fast HPACK encoder for the gateway's own HTTP/2 header blocks: no dynamic table.

``hpack``'s encoder searches its dynamic table and Huffman-codes every literal, per field: on
a proxied gRPC call it was the largest single cost of the gateway (about 1 ms of CPU per
header block of 16 fields on a busy 2-core machine). A proxy's fields are mostly the same
names with values that change per request (ids, deadlines), where a dynamic table buys little.
This encoder writes each field as RFC 7541 allows without any state:

- a field in the static table (``:method: POST``, ``:scheme: https``) as its index (§6.1);
- any other as a literal *without indexing* (§6.2.2), its name as a static-table index when
  there is one, its value as a raw string (no Huffman); the bytes of a name are made once and
  kept;
- ``authorization``, ``proxy-authorization``, ``cookie`` and ``hpack.NeverIndexedHeaderTuple``
  fields as *never indexed* (§6.2.3), so no intermediary keeps them in a table either.

With no entries, the decoder's table is never used; when the peer lowers its
``SETTINGS_HEADER_TABLE_SIZE`` the next block starts with a size update to 0 (§6.3), as a change
must be signalled. It is a stand-in for ``hpack.Encoder`` on an ``h2`` connection
(``conn.encoder = StatelessEncoder()``) whose outbound headers are bytes and already lower-case.
Blocks are larger than hpack's (no Huffman, repeated fields sent in full): the trade the
gateway makes on the links to its services.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from hpack import NeverIndexedHeaderTuple
from hpack.table import HeaderTable

__all__ = ["StatelessEncoder", "encode_integer"]

_SENSITIVE: Final = frozenset({b"authorization", b"proxy-authorization", b"cookie"})
_MAX_NAMES: Final = 1024  # names kept encoded; past that, encoded per use

# (name, value) -> its indexed representation; name -> its static index (the first).
_STATIC_FULL: dict[tuple[bytes, bytes], bytes] = {}
_STATIC_NAME: dict[bytes, int] = {}


def encode_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) in a ``prefix_bits`` prefix, OR-ed into ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_FULL.setdefault((_name, _value), encode_integer(_index, 7, 0x80))
    _STATIC_NAME.setdefault(_name, _index)


def _name_prefix(name: bytes, never: bool) -> bytes:
    """The start of a literal field: its representation's bits and the name (by index or
    literally); the value follows."""
    first = 0x10 if never else 0x00
    index = _STATIC_NAME.get(name)
    if index is not None:
        return encode_integer(index, 4, first)
    return bytes((first,)) + encode_integer(len(name), 7) + name


class StatelessEncoder:
    """``hpack.Encoder``'s interface (``encode``, ``header_table_size``) without a dynamic table."""

    __slots__ = ("_names", "_never", "_resized", "_table_size")

    def __init__(self) -> None:
        self._names: dict[bytes, bytes] = {}
        self._never: dict[bytes, bytes] = {}
        self._table_size = 4096
        self._resized = False

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # The peer's new maximum: ours stays 0 entries, and says so at the next block.
        self._table_size = value
        self._resized = True

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        """One header block. ``huffman`` is accepted for hpack's signature; strings are raw."""
        out: list[bytes] = []
        if self._resized:
            self._resized = False
            out.append(b"\x20")  # dynamic table size update: 0
        names = self._names
        for header in headers:
            name = header[0]
            value = header[1]
            full = _STATIC_FULL.get((name, value))
            if full is not None:
                out.append(full)
                continue
            if name in _SENSITIVE or isinstance(header, NeverIndexedHeaderTuple):
                prefix = self._never.get(name)
                if prefix is None:
                    prefix = _name_prefix(name, True)
                    if len(self._never) < _MAX_NAMES:
                        self._never[name] = prefix
            else:
                prefix = names.get(name)
                if prefix is None:
                    prefix = _name_prefix(name, False)
                    if len(names) < _MAX_NAMES:
                        names[name] = prefix
            size = len(value)
            out.append(prefix)
            out.append(bytes((size,)) if size < 127 else encode_integer(size, 7))
            out.append(value)
        return b"".join(out)
