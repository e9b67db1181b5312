"""JSON to gRPC through a real gateway over sockets, in front of a real grpcio server.

Each test names what it pins down: how path variables, query parameters and the body become the
request message, how the answer prints, how a gRPC status is answered, the deadline, bad input
that never reaches the service, and what metadata the service gets.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
import orjson
from edge_helpers import auth_block, issuer_for, jwks_server
from gateway_helpers import gateway
from google.protobuf.message import Message
from grpc_fixtures import ShelvesServer, message, shelves_descriptor_set, shelves_server

from conftest import dead_port
from edgeway.gateway.config import validate_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.telemetry.component import telemetry_of
from edgeway.gateway.telemetry.meters import OUTCOMES
from edgeway.http.grpc_wire import DETAILS_KEY
from edgeway.http.listener import Listener, bind_socket
from edgeway.security.keys import KeyRing


def config(server_port: int, descriptor_set: Path, **transcode: Any) -> dict[str, Any]:
    return {
        "name": "transcode-test",
        "access_log": {"enabled": False},
        "services": {"shelves": {"instances": [f"http://127.0.0.1:{server_port}"]}},
        "routes": [
            {
                "id": "shelves",
                "match": {"path": "/v1/**"},
                "transcode": {"service": "shelves", "descriptor_set": str(descriptor_set), **transcode},
            }
        ],
    }


async def request(
    port: int, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {target} HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    if body is not None:
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    w.write(head.encode() + b"\r\n" + (body or b""))
    data = await r.read()
    w.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    out = {
        name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])
    }
    return int(lines[0].split(" ")[1]), out, orjson.loads(payload) if payload else None


def get_shelf(server_holder: list[ShelvesServer]) -> Any:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        shelf_id = request.shelf_id
        if shelf_id == 404:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"shelf {shelf_id} does not exist")
        books = (
            [{"id": "1", "title": "Dune", "genre": "FICTION", "tags": ["sf"]}] if request.with_books else []
        )
        return message(server_holder[0], "Shelf", shelf_id=str(shelf_id), theme="sf", books=books)

    return handler


async def test_get_with_a_path_variable_calls_the_method_and_answers_its_json() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []
    async with shelves_server(descriptor_set, GetShelf=get_shelf(holder)) as server:
        holder.append(server)
        async with gateway(config(server.port, descriptor_set)) as (port, _):
            status, headers, body = await request(port, "GET", "/v1/shelves/7?with_books=true")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert body == {
        "shelfId": "7",
        "theme": "sf",
        "books": [{"id": "1", "title": "Dune", "genre": "FICTION", "tags": ["sf"]}],
    }
    sent = server.requests[0]
    assert sent.shelf_id == 7
    assert sent.with_books is True


async def test_post_with_body_star_builds_the_whole_message_and_additional_bindings_work() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []

    async def create_shelf(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        shelf = request.shelf
        return message(holder[0], "Shelf", shelf_id="12", theme=shelf.theme + "!")

    async with shelves_server(descriptor_set, CreateShelf=create_shelf) as server:
        holder.append(server)
        async with gateway(config(server.port, descriptor_set)) as (port, _):
            body = orjson.dumps({"shelf": {"theme": "maps"}, "requestNote": "n1"})
            status, _, answer = await request(port, "POST", "/v1/shelves", body)
            again = await request(port, "PUT", "/v1/shelves:create", orjson.dumps({"shelf": {"theme": "x"}}))
    assert status == 200, answer
    assert answer == {"shelfId": "12", "theme": "maps!"}
    assert again[0] == 200
    assert again[2] == {"shelfId": "12", "theme": "x!"}
    assert server.requests[0].request_note == "n1"


async def test_body_field_and_path_variable_combine_and_the_path_wins() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []

    async def create_book(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        book = request.book
        return message(holder[0], "Book", id=str(request.shelf_id * 100), title=book.title, genre="HISTORY")

    async with shelves_server(descriptor_set, CreateBook=create_book) as server:
        holder.append(server)
        async with gateway(config(server.port, descriptor_set)) as (port, _):
            body = orjson.dumps({"title": "SPQR", "inPrint": True})
            status, _, answer = await request(port, "POST", "/v1/shelves/3/books", body)
    assert status == 200, answer
    assert answer == {"id": "300", "title": "SPQR", "genre": "HISTORY"}
    sent = server.requests[0]
    assert sent.shelf_id == 3
    assert sent.book.in_print is True


async def test_query_parameters_fill_the_other_fields_and_response_body_picks_one() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []

    async def list_books(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        tags = list(request.tags)
        books = [{"id": str(i), "title": tag} for i, tag in enumerate(tags)]
        return message(holder[0], "ListBooksResponse", books=books, total=len(tags))

    async with shelves_server(descriptor_set, ListBooks=list_books) as server:
        holder.append(server)
        cfg = config(
            server.port,
            descriptor_set,
            print_options={"preserve_proto_field_names": True, "always_print_primitive_fields": True},
        )
        async with gateway(cfg) as (port, _):
            target = "/v1/shelves/5/books?tags=a&tags=b%20c&page_size=20&title_prefix=Du"
            status, _, answer = await request(port, "GET", target)
    assert status == 200, answer
    # response_body: "books" — the list, not the wrapping message; every field printed.
    assert answer == [
        {"id": "0", "title": "a", "genre": "GENRE_UNSPECIFIED", "tags": [], "in_print": False},
        {"id": "1", "title": "b c", "genre": "GENRE_UNSPECIFIED", "tags": [], "in_print": False},
    ]
    sent = server.requests[0]
    assert list(sent.tags) == ["a", "b c"]
    assert sent.page_size == 20
    assert sent.title_prefix.value == "Du"
    assert sent.shelf_id == 5


async def test_a_grpc_error_status_is_answered_as_its_http_status_with_a_problem_body() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []
    async with shelves_server(descriptor_set, GetShelf=get_shelf(holder)) as server:
        holder.append(server)
        async with gateway(config(server.port, descriptor_set)) as (port, _):
            status, headers, body = await request(port, "GET", "/v1/shelves/404")
    assert status == 404
    assert headers["content-type"] == "application/problem+json"
    assert body["status"] == 404
    assert body["title"] == "Not Found"
    assert body["detail"] == "shelf 404 does not exist"
    assert body["grpc_status"] == "NOT_FOUND"
    assert body["service"] == "shelves"


async def test_the_timeout_is_the_grpc_deadline_and_its_expiry_answers_504() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []
    remaining: list[float | None] = []

    async def slow(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        remaining.append(context.time_remaining())
        await asyncio.sleep(request.millis / 1000)
        return message(holder[0], "SlowRequest", millis=request.millis)

    async with shelves_server(descriptor_set, Slow=slow) as server:
        holder.append(server)
        async with gateway(config(server.port, descriptor_set, timeout="300ms")) as (port, _):
            started = asyncio.get_running_loop().time()
            status, _, body = await request(port, "GET", "/v1/slow/2000")
            elapsed = asyncio.get_running_loop().time() - started
            fast = await request(port, "GET", "/v1/slow/1")
    assert status == 504, body
    assert body["grpc_status"] == "DEADLINE_EXCEEDED"
    assert elapsed < 1.5, f"the 300 ms deadline took {elapsed:.2f} s"
    assert remaining[0] is not None
    assert 0 < remaining[0] <= 0.3  # the service saw the deadline (grpc-timeout)
    assert fast[0] == 200
    assert fast[2] == {"millis": 1}


async def test_bad_json_and_bad_values_answer_400_naming_the_field_and_nothing_is_sent() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []

    async def create_shelf(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        return message(holder[0], "Shelf")

    async with shelves_server(descriptor_set, CreateShelf=create_shelf, GetShelf=get_shelf(holder)) as server:
        holder.append(server)
        async with gateway(config(server.port, descriptor_set)) as (port, _):
            not_json = await request(port, "POST", "/v1/shelves", b'{"shelf": ')
            wrong_type = await request(
                port, "POST", "/v1/shelves", orjson.dumps({"shelf": {"shelfId": "x7"}})
            )
            unknown = await request(port, "POST", "/v1/shelves", orjson.dumps({"shelf": {"colour": "red"}}))
            bad_path = await request(port, "GET", "/v1/shelves/abc")
            bad_query = await request(port, "GET", "/v1/shelves/1?with_books=maybe")
            unknown_query = await request(port, "GET", "/v1/shelves/1?nope=1")
            array = await request(port, "POST", "/v1/shelves", b"[1, 2]")
    assert not_json[0] == 400
    assert "not valid JSON" in not_json[2]["detail"]
    assert wrong_type[0] == 400
    assert wrong_type[2]["field"] == "shelf.shelfId"
    assert unknown[0] == 400
    assert unknown[2]["field"] == "shelf.colour"
    assert bad_path[0] == 400
    assert "shelf_id" in bad_path[2]["detail"]
    assert bad_query[0] == 400
    assert bad_query[2]["field"] == "with_books"
    assert unknown_query[0] == 400
    assert unknown_query[2]["field"] == "nope"
    assert array[0] == 400
    assert server.requests == []  # none of them reached the service


async def test_the_service_gets_the_request_id_trace_context_and_forwarded_headers_as_metadata() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []
    async with shelves_server(descriptor_set, GetShelf=get_shelf(holder)) as server:
        holder.append(server)
        cfg = config(server.port, descriptor_set, forward_headers=["x-edgeway-subject", "accept-language"])
        async with gateway(cfg) as (port, _):
            trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            headers = {
                "x-request-id": "req-42",
                "traceparent": trace,
                "x-edgeway-subject": "user-1",
                "accept-language": "fr",
                "x-other": "not forwarded",
            }
            status, answer_headers, _ = await request(port, "GET", "/v1/shelves/1", headers=headers)
    assert status == 200
    seen = server.metadata[0]
    assert seen["x-request-id"] == "req-42"
    assert answer_headers["x-request-id"] == "req-42"
    assert seen["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert seen["traceparent"] != trace  # a span of its own, in the client's trace
    assert seen["x-edgeway-subject"] == "user-1"
    assert seen["accept-language"] == "fr"
    assert "x-other" not in seen


async def test_a_route_can_name_a_method_without_annotations() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []

    async def whoami(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        return message(holder[0], "Echo", metadata={"millis": str(request.millis)})

    async with shelves_server(descriptor_set, Whoami=whoami) as server:
        holder.append(server)
        cfg = config(server.port, descriptor_set, method="shelves.v1.Shelves/Whoami")
        cfg["routes"][0]["match"] = {"path": "/whoami/{millis}"}
        async with gateway(cfg) as (port, _):
            status, _, body = await request(port, "POST", "/whoami/15", b"{}")
            no_body = await request(port, "GET", "/whoami/16")
    assert status == 200, body
    assert body == {"metadata": {"millis": "15"}}
    assert no_body[2] == {"metadata": {"millis": "16"}}


async def test_unbound_paths_answer_404_and_a_wrong_method_405_with_allow() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []
    async with shelves_server(descriptor_set, GetShelf=get_shelf(holder)) as server:
        holder.append(server)
        async with gateway(config(server.port, descriptor_set)) as (port, _):
            missing = await request(port, "GET", "/v1/nowhere")
            wrong = await request(port, "DELETE", "/v1/shelves/1")
    assert missing[0] == 404
    assert wrong[0] == 405
    assert wrong[1]["allow"] == "GET"


async def test_no_reachable_instance_answers_503() -> None:
    descriptor_set = shelves_descriptor_set()
    async with gateway(config(dead_port(), descriptor_set, timeout="2s")) as (port, _):
        status, _, body = await request(port, "GET", "/v1/shelves/1")
    assert status == 503, body
    assert body["grpc_status"] == "UNAVAILABLE"


async def test_the_rich_error_model_becomes_the_problems_reason_and_field_errors() -> None:
    descriptor_set = shelves_descriptor_set()

    async def create_shelf(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="bad shelf")
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field="shelf.theme", description="must not be empty")
        status.details.add().Pack(bad)
        status.details.add().Pack(
            error_details_pb2.ErrorInfo(
                reason="EMPTY_THEME", domain="shelves", metadata={"type": "https://shelves.test/empty-theme"}
            )
        )
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad shelf",
            trailing_metadata=((DETAILS_KEY, status.SerializeToString()),),
        )
        raise AssertionError("abort raises")

    async with shelves_server(descriptor_set, CreateShelf=create_shelf) as server:
        cfg = config(server.port, descriptor_set)
        async with gateway(cfg) as (port, _):
            status, _, body = await request(port, "POST", "/v1/shelves", b'{"shelf": {}}')
    assert status == 400
    assert body["grpc_status"] == "INVALID_ARGUMENT"
    assert body["detail"] == "bad shelf"
    assert body["reason"] == "EMPTY_THEME"
    assert body["type"] == "https://shelves.test/empty-theme"  # the kit puts a problem's type there
    assert body["errors"] == [{"field": "shelf.theme", "description": "must not be empty"}]


async def test_64_bit_integers_print_as_numbers_when_asked_nested_ones_too() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []
    async with shelves_server(descriptor_set, GetShelf=get_shelf(holder)) as server:
        holder.append(server)
        cfg = config(server.port, descriptor_set, print_options={"int64_as_numbers": True})
        async with gateway(cfg) as (port, _):
            status, _, body = await request(port, "GET", "/v1/shelves/7?with_books=true")
            _, _, default = await request(port, "GET", "/v1/shelves/7")
    assert status == 200, body
    assert body == {
        "shelfId": 7,  # proto3 JSON's "7" otherwise (the test above)
        "theme": "sf",
        "books": [{"id": 1, "title": "Dune", "genre": "FICTION", "tags": ["sf"]}],
    }
    assert default == {"shelfId": 7, "theme": "sf"}


async def test_enums_print_as_numbers_when_asked() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []

    async def create_book(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        return message(holder[0], "Book", id="1", genre="HISTORY")

    async with shelves_server(descriptor_set, CreateBook=create_book) as server:
        holder.append(server)
        cfg = config(server.port, descriptor_set, print_options={"always_print_enums_as_ints": True})
        async with gateway(cfg) as (port, _):
            status, _, body = await request(port, "POST", "/v1/shelves/1/books", b'{"genre": "FICTION"}')
    assert status == 200, body
    assert body == {"id": "1", "genre": 2}
    assert server.requests[0].book.genre == 1  # the enum's name in the body was understood


async def test_the_verified_identity_goes_as_metadata_and_a_clients_forgery_does_not() -> None:
    ring = KeyRing.generate()
    token = issuer_for(ring).issue("alice", roles=["reader"])
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []
    async with (
        shelves_server(descriptor_set, GetShelf=get_shelf(holder)) as server,
        jwks_server(ring) as jwks,
    ):
        holder.append(server)
        cfg = config(server.port, descriptor_set)
        cfg["auth"] = auth_block(jwks.url)
        cfg["routes"][0]["auth"] = {"roles": ["reader"]}
        async with gateway(cfg) as (port, _):
            forged = {"authorization": f"Bearer {token.token}", "x-edgeway-subject": "mallory"}
            status, _, _ = await request(port, "GET", "/v1/shelves/1", headers=forged)
            anonymous = await request(port, "GET", "/v1/shelves/1")
    assert status == 200
    assert server.metadata[0]["x-edgeway-subject"] == "alice"
    assert "reader" in server.metadata[0]["x-edgeway-roles"]
    assert anonymous[0] == 401
    assert len(server.metadata) == 1  # the anonymous request never reached the service


async def test_grpc_calls_count_in_the_services_metrics_by_outcome() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []
    async with shelves_server(descriptor_set, GetShelf=get_shelf(holder)) as server:
        holder.append(server)
        gw = Gateway(validate_config(config(server.port, descriptor_set)), AccessLog("t", io.BytesIO()))
        await gw.start()
        listener = Listener(gw, gw.limits)
        await listener.start(bind_socket("127.0.0.1", 0))
        try:
            for target in ("/v1/shelves/1", "/v1/shelves/2", "/v1/shelves/404"):
                await request(listener.port, "GET", target)
            meter = telemetry_of(gw.env).meter("shelves")
        finally:
            await listener.shutdown(1.0)
            await gw.stop()
    assert meter is not None
    counted = dict(zip(OUTCOMES, meter.outcomes, strict=True))
    assert counted["2xx"] == 2
    assert counted["4xx"] == 1
    assert sum(sum(i.outcomes) for i in meter.instances.values()) == 3


async def test_a_call_that_cannot_connect_is_retried_on_another_instance_by_the_services_retry() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []
    async with shelves_server(descriptor_set, GetShelf=get_shelf(holder)) as server:
        holder.append(server)
        cfg = config(server.port, descriptor_set)
        cfg["services"]["shelves"] = {
            "instances": [f"http://127.0.0.1:{dead_port()}", f"http://127.0.0.1:{server.port}"],
            "retry": {"attempts": 2, "backoff": "1ms"},
        }
        async with gateway(cfg) as (port, _):
            answers = [await request(port, "GET", f"/v1/shelves/{n}") for n in range(1, 5)]
        async with gateway(config(dead_port(), descriptor_set)) as (port, _):
            unretried = await request(port, "GET", "/v1/shelves/1")
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    assert [body["shelfId"] for _, _, body in answers] == ["1", "2", "3", "4"]
    assert len(server.requests) == 4  # each request reached the live instance once
    assert unretried[0] == 503


async def test_an_unavailable_answer_is_retried_only_for_a_method_declared_idempotent() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []

    async def unavailable(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        raise AssertionError("abort raises")

    async def create_shelf(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        return message(holder[0], "Shelf", shelf_id="1")

    async with (
        shelves_server(descriptor_set, GetShelf=unavailable, CreateShelf=unavailable) as sick,
        shelves_server(descriptor_set, GetShelf=get_shelf(holder), CreateShelf=create_shelf) as healthy,
    ):
        holder.append(healthy)
        cfg = config(healthy.port, descriptor_set)
        cfg["services"]["shelves"] = {
            "instances": [f"http://127.0.0.1:{sick.port}", f"http://127.0.0.1:{healthy.port}"],
            "retry": {"attempts": 2, "backoff": "1ms", "budget": {"percent": 100, "min_per_second": 100}},
        }
        async with gateway(cfg) as (port, _):
            gets = [await request(port, "GET", f"/v1/shelves/{n}") for n in range(1, 5)]
            posts = [await request(port, "POST", "/v1/shelves", b"{}") for _ in range(4)]
    # GetShelf is NO_SIDE_EFFECTS: an UNAVAILABLE (503, in retry_on) goes to the other instance.
    assert [status for status, _, _ in gets] == [200, 200, 200, 200]
    # CreateShelf is not: the sick instance's 503 is the answer, and nothing is sent twice.
    post_statuses = [status for status, _, _ in posts]
    assert sorted(set(post_statuses)) == [200, 503]
    sick_posts = sum(1 for r in sick.requests if not hasattr(r, "shelf_id"))
    healthy_posts = sum(1 for r in healthy.requests if not hasattr(r, "shelf_id"))
    assert post_statuses.count(503) == sick_posts
    assert sick_posts + healthy_posts == 4


async def test_the_services_concurrency_bound_sheds_grpc_calls_beyond_it() -> None:
    descriptor_set = shelves_descriptor_set()
    release = asyncio.Event()
    holder: list[ShelvesServer] = []

    async def held(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        await release.wait()
        return message(holder[0], "SlowRequest", millis=request.millis)

    async with shelves_server(descriptor_set, Slow=held) as server:
        holder.append(server)
        cfg = config(server.port, descriptor_set)
        cfg["services"]["shelves"]["concurrency"] = {"max_concurrent": 1}
        async with gateway(cfg) as (port, _):
            first = asyncio.ensure_future(request(port, "GET", "/v1/slow/1"))
            while not server.requests:
                await asyncio.sleep(0.01)
            status, headers, body = await request(port, "GET", "/v1/slow/2")
            release.set()
            done = await first
            after = await request(port, "GET", "/v1/slow/3")
    assert status == 503, body
    assert "retry-after" in headers
    assert "concurrency limit" in body["detail"]
    assert done[0] == 200
    assert after[0] == 200  # the slot was given back
    assert len(server.requests) == 2


async def test_the_channel_of_an_instance_that_leaves_its_service_is_closed() -> None:
    from edgeway.gateway.actions.transcode.invoker import GrpcChannels

    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []
    async with (
        shelves_server(descriptor_set, GetShelf=get_shelf(holder)) as first,
        shelves_server(descriptor_set, GetShelf=get_shelf(holder)) as second,
    ):
        holder.append(first)
        gw = Gateway(validate_config(config(first.port, descriptor_set)), AccessLog("t", io.BytesIO()))
        await gw.start()
        listener = Listener(gw, gw.limits)
        await listener.start(bind_socket("127.0.0.1", 0))
        try:
            before = await request(listener.port, "GET", "/v1/shelves/1")
            channels = gw.env.components["grpc-channels"]
            assert isinstance(channels, GrpcChannels)
            opened = channels.open_channels
            gw.clusters["shelves"].update([f"http://127.0.0.1:{second.port}"])  # discovery's move
            after_move = channels.open_channels
            after = await request(listener.port, "GET", "/v1/shelves/2")
        finally:
            await listener.shutdown(1.0)
            await gw.stop()
        listening = len(gw.clusters["shelves"].listeners)
    assert before[0] == 200
    assert after[0] == 200
    assert opened == 1
    assert after_move == 0  # the first instance's channel left with it
    assert channels.open_channels == 0  # and the gateway's stop closed the second's
    assert len(first.requests) == 1
    assert len(second.requests) == 1
    assert listening == 0  # a stopped gateway leaves no listener on the (longer-lived) cluster
