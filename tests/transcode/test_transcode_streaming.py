"""Streaming methods transcoded through a real gateway over sockets, in front of a real grpcio
server: a server stream answered element by element as the messages arrive (a JSON array,
NDJSON, Server-Sent Events), an error status before or after messages, a JSON array body sent
as a client stream, bad or too many elements refused before anything is sent, a bidirectional
call, and HTTP/2."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import orjson
from gateway_helpers import gateway
from google.protobuf.message import Message
from grpc_fixtures import ShelvesServer, message, shelves_descriptor_set, shelves_server
from h2_client import H2Client
from h2_gateway import gateway_config, serving
from test_transcode_gateway import config

from conftest import dead_port

Context = grpc.aio.ServicerContext[Any, Any]


class Counter:
    """``CountShelves``/``ShelfThemes``: ``count`` shelves; the second waits for ``release``
    (so a test can see the first reach the client while the service still holds the rest);
    ``fail_after``: an error status after that many; ``count`` 404: NOT_FOUND before any."""

    def __init__(self) -> None:
        self.holder: list[ShelvesServer] = []
        self.release = asyncio.Event()
        self.release.set()
        self.cancelled = asyncio.Event()
        self.produced = 0

    async def count(self, request: Any, context: Context) -> AsyncIterator[Message]:
        if request.count == 404:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no shelves to count")
        ended = False
        try:
            for index in range(request.count):
                if index == request.fail_after > 0:
                    ended = True
                    await context.abort(grpc.StatusCode.DATA_LOSS, f"lost after {index}")
                if index == 1:
                    await self.release.wait()
                self.produced += 1
                theme = request.theme * 1000 if request.theme else f"t{index}"
                yield message(self.holder[0], "Shelf", shelf_id=str(index + 1), theme=theme)
            ended = True
        finally:
            if not ended:  # cancelled while waiting, or closed at a yield the client never took
                self.cancelled.set()


@contextlib.asynccontextmanager
async def counting() -> AsyncIterator[tuple[Counter, ShelvesServer]]:
    counter = Counter()
    async with shelves_server(
        shelves_descriptor_set(), CountShelves=counter.count, ShelfThemes=counter.count
    ) as server:
        counter.holder.append(server)
        yield counter, server


async def open_request(port: int, head: str, body: bytes = b"") -> tuple[asyncio.StreamReader, Any]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(head.encode() + b"\r\n" + body)
    return r, w


def get_head(target: str) -> str:
    return f"GET {target} HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n"


async def read_head(r: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    lines = raw.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    return int(lines[0].split(" ")[1]), headers


async def read_chunk(r: asyncio.StreamReader) -> bytes | None:
    """One chunk of a chunked body; None for the last (zero) chunk."""
    size = int((await asyncio.wait_for(r.readuntil(b"\r\n"), 5)).strip(), 16)
    if size == 0:
        await r.readuntil(b"\r\n")
        return None
    data = await r.readexactly(size + 2)
    return data[:-2]


async def read_chunks(r: asyncio.StreamReader) -> tuple[bytes, bool]:
    """The rest of a chunked body and whether it ended with its last chunk (not cut)."""
    body = b""
    try:
        while (chunk := await read_chunk(r)) is not None:
            body += chunk
    except asyncio.IncompleteReadError:
        return body, False
    return body, True


async def test_a_server_stream_is_a_json_array_whose_first_element_arrives_before_the_last_is_sent() -> None:
    async with counting() as (counter, _):
        counter.release.clear()
        async with gateway(config(counter.holder[0].port, shelves_descriptor_set())) as (port, _):
            r, w = await open_request(port, get_head("/v1/count/3"))
            status, headers = await read_head(r)
            first = await read_chunk(r)  # the service is still holding the second message
            assert not counter.release.is_set()
            counter.release.set()
            rest, complete = await read_chunks(r)
            w.close()
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["transfer-encoding"] == "chunked"
    assert first == b'[{"shelfId":"1","theme":"t0"}'
    assert complete
    assert orjson.loads(first + rest) == [
        {"shelfId": "1", "theme": "t0"},
        {"shelfId": "2", "theme": "t1"},
        {"shelfId": "3", "theme": "t2"},
    ]


async def test_newline_delimited_and_sse_framings_write_one_message_per_line_or_event() -> None:
    async with counting() as (counter, _):
        port_ = counter.holder[0].port
        ndjson = config(port_, shelves_descriptor_set(), print_options={"stream_newline_delimited": True})
        async with gateway(ndjson) as (port, _):
            r, w = await open_request(port, get_head("/v1/count/2"))
            status, headers = await read_head(r)
            first = await read_chunk(r)
            rest, complete = await read_chunks(r)
            w.close()
        assert (status, headers["content-type"], complete) == (200, "application/x-ndjson", True)
        assert first == b'{"shelfId":"1","theme":"t0"}\n'
        assert (first or b"") + rest == b'{"shelfId":"1","theme":"t0"}\n{"shelfId":"2","theme":"t1"}\n'
        sse = config(port_, shelves_descriptor_set(), print_options={"stream_sse_style_delimited": True})
        async with gateway(sse) as (port, _):
            r, w = await open_request(port, get_head("/v1/themes/2"))
            status, headers = await read_head(r)
            body, complete = await read_chunks(r)
            w.close()
    assert (status, headers["content-type"], complete) == (200, "text/event-stream", True)
    assert headers["cache-control"] == "no-cache"
    assert body == b'data: "t0"\n\ndata: "t1"\n\n'  # response_body: each message's `theme`


async def test_an_error_status_after_messages_cuts_the_answer_and_before_any_is_a_problem() -> None:
    async with (
        counting() as (counter, _),
        gateway(config(counter.holder[0].port, shelves_descriptor_set())) as (port, log),
    ):
        r, w = await open_request(port, get_head("/v1/count/5?fail_after=2"))
        status, _ = await read_head(r)
        body, complete = await read_chunks(r)
        w.close()
        r, w = await open_request(port, get_head("/v1/count/404"))
        problem_status, problem_headers = await read_head(r)
        problem = orjson.loads(await r.read())
        w.close()
        r, w = await open_request(port, get_head("/v1/count/0"))
        empty_status, empty_headers = await read_head(r)
        empty = await r.read()
        w.close()
    # The 200 is out: the array stays open, the last chunk never comes, the connection closes.
    assert status == 200
    assert not complete
    assert body == b'[{"shelfId":"1","theme":"t0"},{"shelfId":"2","theme":"t1"}'
    (logged,) = [e for e in map(orjson.loads, log.getvalue().splitlines()) if e["path"] == "/v1/count/5"]
    assert (logged["grpc_method"], logged["grpc_status"]) == ("shelves.v1.Shelves.CountShelves", "DATA_LOSS")
    assert problem_status == 404
    assert problem_headers["content-type"] == "application/problem+json"
    assert problem["grpc_status"] == "NOT_FOUND"
    assert problem["detail"] == "no shelves to count"
    assert (empty_status, empty_headers["content-length"], empty) == (200, "2", b"[]")


async def test_a_client_that_leaves_mid_stream_cancels_the_call_upstream() -> None:
    async with counting() as (counter, _):
        counter.release.clear()  # the second message never comes on its own
        async with gateway(config(counter.holder[0].port, shelves_descriptor_set())) as (port, _):
            r, w = await open_request(port, get_head("/v1/count/3"))
            await read_head(r)
            assert await read_chunk(r) == b'[{"shelfId":"1","theme":"t0"}'
            w.close()
            await asyncio.wait_for(counter.cancelled.wait(), 5)


async def test_a_client_that_stops_reading_holds_no_more_than_the_buffers_and_is_cut() -> None:
    """Backpressure: the gateway takes a message only when the client has read the last, so a
    stream of 80 MB towards a client that reads nothing stops early upstream, and after
    `send_timeout` the answer is cut and the call cancelled."""
    async with counting() as (counter, _):
        cfg = config(counter.holder[0].port, shelves_descriptor_set())
        cfg["limits"] = {"send_timeout": "0.5s"}
        async with gateway(cfg) as (port, _):
            _reader, w = await open_request(port, get_head("/v1/count/20000?theme=abcd"))
            await asyncio.wait_for(counter.cancelled.wait(), 10)
            w.close()
    assert 0 < counter.produced < 20000


def summing(seen: list[list[int]]) -> Any:
    holder: list[ShelvesServer] = []

    async def total(requests: AsyncIterator[Any], context: Context) -> Message:
        values = [int(request.value) async for request in requests]
        seen.append(values)
        return message(holder[0], "Total", sum=str(sum(values)), count=len(values))

    async def running(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Message]:
        values: list[int] = []
        async for request in requests:
            values.append(int(request.value))
            yield message(holder[0], "Total", sum=str(sum(values)), count=len(values))
        seen.append(values)

    return holder, {"Sum": total, "SumValues": total, "RunningSum": running}


def post_head(target: str, body: bytes) -> str:
    return (
        f"POST {target} HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    )


async def post(port: int, target: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    r, w = await open_request(port, post_head(target, body), body)
    status, headers = await read_head(r)
    if headers.get("transfer-encoding") == "chunked":
        payload, complete = await read_chunks(r)
        assert complete
    else:
        payload = await r.read()
    w.close()
    return status, headers, payload


async def test_a_json_array_body_is_sent_as_a_client_stream_and_a_bidirectional_one_streams_back() -> None:
    seen: list[list[int]] = []
    holder, handlers = summing(seen)
    async with shelves_server(shelves_descriptor_set(), **handlers) as server:
        holder.append(server)
        async with gateway(config(server.port, shelves_descriptor_set())) as (port, _):
            whole = await post(port, "/v1/sum", b'[{"value": 1}, {"value": "2"}, {"value": 39}]')
            fields = await post(port, "/v1/sum-values", b"[4, 5]")  # body: "value": each is the field
            none = await post(port, "/v1/sum", b"[]")
            running = await post(port, "/v1/running-sum", b'[{"value": 1}, {"value": 2}, {"value": 3}]')
    assert whole[0] == 200
    assert whole[1]["content-type"] == "application/json"
    assert orjson.loads(whole[2]) == {"sum": "42", "count": 3}
    assert orjson.loads(fields[2]) == {"sum": "9", "count": 2}
    assert orjson.loads(none[2]) == {}
    assert running[0] == 200
    assert running[1]["transfer-encoding"] == "chunked"
    assert orjson.loads(running[2]) == [
        {"sum": "1", "count": 1},
        {"sum": "3", "count": 2},
        {"sum": "6", "count": 3},
    ]
    assert seen == [[1, 2, 39], [4, 5], [], [1, 2, 3]]


async def test_a_bad_element_or_too_many_are_refused_and_nothing_is_sent() -> None:
    seen: list[list[int]] = []
    holder, handlers = summing(seen)
    async with shelves_server(shelves_descriptor_set(), **handlers) as server:
        holder.append(server)
        cfg = config(server.port, shelves_descriptor_set(), max_stream_messages=3)
        cfg["limits"] = {"max_body_bytes": 200}
        async with gateway(cfg) as (port, _):
            bad = await post(port, "/v1/sum", b'[{"value": 1}, {"value": "x"}, {"value": 3}]')
            unknown = await post(port, "/v1/sum", b'[{"value": 1}, {"nope": 2}]')
            scalar = await post(port, "/v1/sum", b'{"value": 1}')
            not_json = await post(port, "/v1/sum", b'[{"value": 1},')
            too_many = await post(port, "/v1/sum", b"[{}, {}, {}, {}]")
            too_big = await post(port, "/v1/sum", b"[" + b'{"value": 1},' * 20 + b"{}]")
            fine = await post(port, "/v1/sum", b"[{}, {}, {}]")
    problem = orjson.loads(bad[2])
    assert bad[0] == 400
    assert problem["field"] == "[1].value"
    assert problem["index"] == 1
    assert problem["detail"].startswith("element 1: body:")
    assert unknown[0] == 400
    assert orjson.loads(unknown[2])["field"] == "[1].nope"
    assert scalar[0] == 400
    assert "must be a JSON array" in orjson.loads(scalar[2])["detail"]
    assert not_json[0] == 400
    assert too_many[0] == 413
    assert "at most 3" in orjson.loads(too_many[2])["detail"]
    assert too_big[0] == 413
    assert fine[0] == 200
    assert seen == [[0, 0, 0]]  # only the last request reached the service


async def test_over_http2_messages_are_data_frames_an_error_after_them_resets_and_arrays_stream_in(
    tmp_path: Path,
) -> None:
    seen: list[list[int]] = []
    holder, handlers = summing(seen)
    async with counting() as (counter, _), shelves_server(shelves_descriptor_set(), **handlers) as summer:
        holder.append(summer)
        counter.release.clear()
        cfg = gateway_config(0)
        transcode = config(counter.holder[0].port, shelves_descriptor_set())
        cfg["services"] = {
            **transcode["services"],
            "sums": {"instances": [f"http://127.0.0.1:{summer.port}"]},
        }
        summing_route = {
            "match": {"path": "/v1/running-sum"},
            "transcode": {"service": "sums", "descriptor_set": str(shelves_descriptor_set())},
        }
        cfg["routes"] = [summing_route, *transcode["routes"]]
        async with serving(tmp_path, cfg) as server:
            client = await H2Client.connect(server.port)
            try:
                sid = client.send_request("GET", "/v1/count/2")
                for _ in range(500):  # the first element, while the service holds the second
                    if client.replies.get(sid) is not None and client.replies[sid].body:
                        break
                    await asyncio.sleep(0.01)
                early = client.replies[sid].body
                counter.release.set()
                whole = await client.response(sid)
                cut = await client.request("GET", "/v1/count/4?fail_after=1")
                body = b'[{"value": 5}, {"value": 6}]'
                headers = [("content-type", "application/json")]
                running = await client.request("POST", "/v1/running-sum", headers, body)
            finally:
                await client.close()
    assert early == b'[{"shelfId":"1","theme":"t0"}'
    assert whole.status == 200
    assert whole.reset is None
    assert orjson.loads(whole.body) == [{"shelfId": "1", "theme": "t0"}, {"shelfId": "2", "theme": "t1"}]
    assert cut.status == 200
    assert cut.reset == 2  # RST_STREAM INTERNAL_ERROR: the answer is not complete
    assert cut.body == b'[{"shelfId":"1","theme":"t0"}'
    assert running.status == 200
    assert orjson.loads(running.body) == [{"sum": "5", "count": 1}, {"sum": "11", "count": 2}]
    assert seen == [[5, 6]]


async def test_a_stream_that_cannot_connect_goes_to_another_instance_with_every_message() -> None:
    seen: list[list[int]] = []
    holder, handlers = summing(seen)
    async with shelves_server(shelves_descriptor_set(), **handlers) as summer:
        holder.append(summer)
        cfg = config(summer.port, shelves_descriptor_set())
        cfg["services"]["shelves"] = {
            "instances": [f"http://127.0.0.1:{dead_port()}", f"http://127.0.0.1:{summer.port}"],
            "retry": {"attempts": 2, "backoff": "1ms"},
        }
        async with gateway(cfg) as (port, _):
            sums = [await post(port, "/v1/sum", b'[{"value": 1}, {"value": 2}]') for _ in range(3)]
        async with gateway(config(dead_port(), shelves_descriptor_set(), timeout="2s")) as (port, _):
            r, w = await open_request(port, get_head("/v1/count/2"))
            status, headers = await read_head(r)
            problem = orjson.loads(await r.read())
            w.close()
    assert [(s, orjson.loads(body)) for s, _, body in sums] == [(200, {"sum": "3", "count": 2})] * 3
    assert seen == [[1, 2]] * 3  # each reached the live instance once, whole
    assert (status, headers["content-type"]) == (503, "application/problem+json")
    assert problem["grpc_status"] == "UNAVAILABLE"
