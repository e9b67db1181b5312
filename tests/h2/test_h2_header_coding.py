"""HPACK on downstream HTTP/2: the gateway's fast decoder reads requests exactly as ``hpack``
does (errors included), and its response encoder's blocks decode in a client, through table
resizes, without entering per-response values in the client's table."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvloop
from h2.settings import SettingCodes
from h2_gateway import gateway_config, serving
from hpack import Decoder, Encoder
from hpack.exceptions import InvalidTableIndex, InvalidTableSizeError, OversizedHeaderListError
from hyperframe.frame import SettingsFrame
from raw_h2 import RawH2, RecordingService

from edgeway.gateway.process.serve import GatewayServer
from edgeway.http.h2.hpack_decoder import IndexedFastDecoder
from edgeway.http.h2.response_encoder import ResponseEncoder

Fields = list[tuple[bytes, bytes]]

REQUEST: Fields = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":path", b"/items?page=2"),
    (b":authority", b"api.example"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
    (b"accept", b"*/*"),
    (b"x-trace", b"abc"),
]


def blocks(fields: Fields, count: int) -> list[bytes]:
    """``count`` blocks of the same request from one client encoder: the later ones indexed."""
    encoder = Encoder()
    return [encoder.encode(fields) for _ in range(count)]


def test_indexed_blocks_decode_as_hpack_decodes_them() -> None:
    sent = blocks(REQUEST, 3)
    assert all(byte & 0x80 for byte in sent[2])  # the case the fast path takes
    fast, reference = IndexedFastDecoder(), Decoder()
    for block in sent:
        assert list(fast.decode(block, raw=True)) == list(reference.decode(block, raw=True)) == REQUEST
    assert fast.header_table.dynamic_entries == reference.header_table.dynamic_entries


def test_an_index_past_the_table_is_hpacks_error() -> None:
    with pytest.raises(InvalidTableIndex):
        IndexedFastDecoder().decode(bytes([0x82, 0x80 | 70]), raw=True)


def test_a_bomb_of_indexed_fields_is_refused_at_the_list_limit() -> None:
    # One 4000-byte entry, then 200 references to it: 800 kB inflated from 200 bytes.
    encoder = Encoder()
    first = encoder.encode([(b"x-bomb", b"b" * 4000)])
    decoder = IndexedFastDecoder()
    decoder.max_header_list_size = 16_384
    assert list(decoder.decode(first, raw=True)) == [(b"x-bomb", b"b" * 4000)]
    assert list(decoder.decode(bytes([0x80 | 62]) * 3, raw=True)) == [(b"x-bomb", b"b" * 4000)] * 3
    with pytest.raises(OversizedHeaderListError):
        decoder.decode(bytes([0x80 | 62]) * 200, raw=True)


def test_a_table_not_shrunk_to_a_lowered_maximum_is_refused_on_the_fast_path() -> None:
    sent = blocks(REQUEST, 2)
    decoder = IndexedFastDecoder()
    decoder.decode(sent[0], raw=True)
    decoder.max_allowed_table_size = 0  # the gateway lowered SETTINGS_HEADER_TABLE_SIZE
    with pytest.raises(InvalidTableSizeError):
        decoder.decode(sent[1], raw=True)


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
    return policy


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayServer]:
    async with RecordingService.serving() as svc, serving(tmp_path, gateway_config(svc.port)) as server:
        yield server


@pytest.mark.parametrize("table_size", [4096, 0])
async def test_responses_decode_without_entering_unique_values_in_the_clients_table(
    gateway: GatewayServer, table_size: int
) -> None:
    client = await RawH2.connect(gateway.port)
    try:
        if table_size != 4096:
            # A client that allows no table: the gateway's blocks must say they use none.
            client.send(SettingsFrame(0, settings={SettingCodes.HEADER_TABLE_SIZE: table_size}))
            client.decoder.max_allowed_table_size = table_size
        ids = range(1, 41, 2)
        client.send(*(client.headers(stream_id, REQUEST) for stream_id in ids))
        await client.until(lambda c: all(c.ended(i) for i in ids))
        assert {client.status(i) for i in ids} == {200}
        request_ids = {dict(fields).get(b"x-request-id") for _, fields in client.header_lists}
        assert None not in request_ids
        assert len(request_ids) == len(ids)  # each response its own
        entered = {name for name, _ in client.decoder.header_table.dynamic_entries}
        assert not entered & {b"x-request-id", b"traceparent", b"date", b"content-length"}
    finally:
        await client.close()


RESPONSE_NAMES = [
    b"content-type",
    b"server",
    b"vary",
    b"x-request-id",
    b"date",
    b"content-length",
    b"x-custom",
]


def test_response_blocks_decode_as_sent_through_table_resizes() -> None:
    # A peer's hpack decoder, its table resized now and then (SETTINGS_HEADER_TABLE_SIZE): every
    # block decodes to the fields encoded, whatever the encoder entered in the table before.
    rng = random.Random(16)
    encoder, decoder = ResponseEncoder(), Decoder()
    for block in range(400):
        if block % 57 == 56:
            size = rng.choice([0, 64, 256, 4096])
            decoder.max_allowed_table_size = size  # what the peer now enforces
            encoder.header_table_size = size
        fields = [(b":status", b"200")] + [
            (
                rng.choice(RESPONSE_NAMES),
                rng.choice([b"application/json", b"edgeway", b"x" * rng.randint(0, 300)]),
            )
            for _ in range(rng.randint(0, 8))
        ]
        assert decoder.decode(encoder.encode(fields), raw=True) == fields
        assert decoder.header_table.maxsize <= decoder.max_allowed_table_size


def test_repeating_fields_become_one_byte_and_unique_ones_never_enter_the_table() -> None:
    encoder, decoder = ResponseEncoder(), Decoder()
    first = [(b":status", b"200"), (b"content-type", b"application/json"), (b"server", b"edgeway")]
    for request_id in (b"a" * 32, b"b" * 32):
        fields = [*first, (b"x-request-id", request_id)]
        block = encoder.encode(fields)
        assert decoder.decode(block, raw=True) == fields
    assert block[:3] == b"\x88\xbf\xbe"  # :status 200, then both repeating fields by index
    assert [name for name, _ in decoder.header_table.dynamic_entries] == [b"server", b"content-type"]
