"""The HPACK encoder for the gateway's HTTP/2 responses: stateless, except for the few fields that
repeat on every response.

``StatelessEncoder`` (no table, no Huffman) is cheap but sends ``server: …`` or
``content-type: application/json`` in full on every response: a typical proxied response's block
was 106 bytes against hpack's 30. This encoder enters only fields whose names carry values that
repeat (``content-type``, ``server``, ``vary``, ``cache-control`` and the like) into the peer's
dynamic table (RFC 7541 §6.2.1), and afterwards sends them as one-byte indexes; everything else,
per-response values (``x-request-id``, ``traceparent``, ``date``, ``content-length``) above all,
goes out as the stateless encoder writes it. Entries are never evicted: the encoder stops adding
once they fill ``_BUDGET`` bytes (or the peer's smaller table), so an index, once sent, holds
for the connection's life and costs one dictionary lookup to find. When the peer changes its
``SETTINGS_HEADER_TABLE_SIZE`` the next block empties its table (a size update to 0) and sets the
new size (§6.3), and filling starts over.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from hpack import NeverIndexedHeaderTuple

from edgeway.http.hpack_encoder import _STATIC_NAME, StatelessEncoder, encode_integer

__all__ = ["ResponseEncoder"]

# Response fields whose values repeat across responses: worth a table entry each.
_REPEATING: Final = frozenset(
    {
        b"content-type",
        b"server",
        b"vary",
        b"cache-control",
        b"content-encoding",
        b"accept-ranges",
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-expose-headers",
        b"strict-transport-security",
        b"x-content-type-options",
        b"x-frame-options",
        b"referrer-policy",
        b"alt-svc",
        b"via",
    }
)
# Bytes of the peer's table (RFC 7541 §4.1 entry sizes) the encoder fills at most.
_BUDGET: Final = 2048
_ENTRY_OVERHEAD: Final = 32
_FIRST_DYNAMIC: Final = 62  # the index of the newest dynamic entry (§2.3.3)


class ResponseEncoder:
    """``hpack.Encoder``'s interface (``encode``, ``header_table_size``) for an ``h2`` server
    connection whose outbound fields are bytes and lower-case."""

    __slots__ = ("_capacity", "_entries", "_plain", "_size", "_update")

    def __init__(self) -> None:
        self._plain = StatelessEncoder()
        self._capacity = min(4096, _BUDGET)  # the protocol's initial table size, or our budget
        self._entries: dict[tuple[bytes, bytes], int] = {}  # field -> its insertion number
        self._size = 0
        self._update = b""  # size updates the next block starts with

    @property
    def header_table_size(self) -> int:
        return self._capacity

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # The peer's new maximum: empty its table and use at most the smaller of it and the budget.
        self._capacity = min(value, _BUDGET)
        self._entries.clear()
        self._size = 0
        self._update = b"\x20" + encode_integer(self._capacity, 5, 0x20)

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        """One header block. ``huffman`` is accepted for hpack's signature; strings are raw."""
        out: list[bytes] = []
        if self._update:
            out.append(self._update)
            self._update = b""
        entries = self._entries
        plain = self._plain
        run: list[tuple[bytes, bytes]] = []  # fields for the stateless encoder, in one call
        for header in headers:
            name = header[0]
            if name not in _REPEATING or isinstance(header, NeverIndexedHeaderTuple):
                run.append(header)
                continue
            if run:
                out.append(plain.encode(run))
                run = []
            field = (name, header[1])
            number = entries.get(field)
            if number is not None:
                out.append(encode_integer(_FIRST_DYNAMIC + len(entries) - 1 - number, 7, 0x80))
                continue
            size = _ENTRY_OVERHEAD + len(name) + len(field[1])
            if self._size + size <= self._capacity:
                self._size += size
                entries[field] = len(entries)
                out.append(_with_incremental_indexing(name, field[1]))
            else:
                out.append(plain.encode((header,)))
        if run:
            out.append(plain.encode(run))
        return b"".join(out)


def _with_incremental_indexing(name: bytes, value: bytes) -> bytes:
    """A literal field the decoder enters in its table (§6.2.1): name by static index when it has
    one, value raw."""
    index = _STATIC_NAME.get(name)
    prefix = (
        encode_integer(index, 6, 0x40) if index is not None else b"\x40" + encode_integer(len(name), 7) + name
    )
    return prefix + encode_integer(len(value), 7) + value
