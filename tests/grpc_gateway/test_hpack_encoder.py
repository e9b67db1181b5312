"""The stateless HPACK encoder: what hpack's own decoder reads back, field for field."""

from __future__ import annotations

import pytest
from hpack import Decoder, NeverIndexedHeaderTuple
from hypothesis import given
from hypothesis import strategies as st

from edgeway.http.hpack_encoder import StatelessEncoder, encode_integer

NAMES = st.sampled_from([b":path", b"content-type", b"x-request-id", b"grpc-timeout", b"te", b"a" * 200])
VALUES = st.binary(min_size=0, max_size=300).filter(lambda v: b"\0" not in v)


@given(st.lists(st.tuples(NAMES, VALUES), max_size=20))
def test_blocks_decode_to_the_same_fields(fields: list[tuple[bytes, bytes]]) -> None:
    encoder = StatelessEncoder()
    decoder = Decoder()
    for _ in range(2):  # the second block as the first: nothing carried between blocks
        assert decoder.decode(encoder.encode(fields), raw=True) == fields
    assert len(decoder.header_table.dynamic_entries) == 0  # nothing entered the peer's table


def test_static_fields_are_one_byte_and_names_are_indexed() -> None:
    encoder = StatelessEncoder()
    assert encoder.encode([(b":method", b"POST")]) == b"\x83"
    assert encoder.encode([(b":method", b"GET")]) == b"\x82"
    # content-type is static entry 31: literal without indexing, name index 15 + 16, raw value
    assert encoder.encode([(b"content-type", b"application/grpc")]) == b"\x0f\x10\x10application/grpc"


def test_credentials_are_never_indexed() -> None:
    encoder = StatelessEncoder()
    decoded = Decoder().decode(
        encoder.encode([(b"authorization", b"Bearer x"), NeverIndexedHeaderTuple(b"x-secret", b"s")]),
        raw=True,
    )
    assert decoded == [(b"authorization", b"Bearer x"), (b"x-secret", b"s")]
    assert all(isinstance(field, NeverIndexedHeaderTuple) for field in decoded)


def test_a_smaller_peer_table_is_acknowledged_with_a_size_update() -> None:
    encoder = StatelessEncoder()
    encoder.header_table_size = 0
    block = encoder.encode([(b":method", b"POST")])
    assert block == b"\x20\x83"
    decoder = Decoder()
    decoder.max_allowed_table_size = 0
    assert decoder.decode(block, raw=True) == [(b":method", b"POST")]
    assert encoder.encode([(b":method", b"POST")]) == b"\x83"  # said once


@pytest.mark.parametrize(
    ("value", "bits", "encoded"),
    [(10, 5, b"\x0a"), (1337, 5, b"\x1f\x9a\x0a"), (42, 8, b"\x2a"), (127, 7, b"\x7f\x00")],
)
def test_integers_as_rfc_7541_writes_them(value: int, bits: int, encoded: bytes) -> None:
    assert encode_integer(value, bits) == encoded
