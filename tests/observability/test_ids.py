from edgeway.observability.ids import (
    TraceParent,
    new_request_id,
    new_request_ids,
    new_traceparent,
    parse_traceparent,
    valid_request_id,
)


def test_generated_request_ids_are_valid_and_unique() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(valid_request_id(i) and len(i) == 32 for i in ids)


def test_request_id_rejects_log_injection_and_oversize() -> None:
    assert not valid_request_id(b"abc\r\nX-Evil: 1")
    assert not valid_request_id(b'{"json":1}')
    assert not valid_request_id(b"a" * 129)
    assert not valid_request_id(b"")
    assert valid_request_id(b"0f8fad5b-d9cb-469f-a165-70867728950e")


def test_traceparent_round_trip_and_child_keeps_trace() -> None:
    tp = new_traceparent()
    parsed = parse_traceparent(tp.encode())
    assert parsed == tp
    child = tp.child()
    assert child.trace_id == tp.trace_id
    assert child.parent_id != tp.parent_id


def test_traceparent_rejects_malformed_and_zero_ids() -> None:
    assert parse_traceparent(b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01") is None
    assert parse_traceparent(b"00-" + b"a" * 32 + b"-" + b"0" * 16 + b"-01") is None
    assert parse_traceparent(b"ff-" + b"a" * 32 + b"-" + b"1" * 16 + b"-01") is None
    assert parse_traceparent(b"00-XYZ-1-01") is None
    assert parse_traceparent(b"00-" + b"A" * 32 + b"-" + b"1" * 16 + b"-01") is None


def test_one_draw_gives_three_distinct_well_formed_ids() -> None:
    drawn = [new_request_ids() for _ in range(1000)]
    assert len({d for ids in drawn for d in ids}) == 3000
    for request_id, trace_id, span_id in drawn:
        assert valid_request_id(request_id)
        assert len(request_id) == 32
        assert parse_traceparent(TraceParent(trace_id, span_id, b"01").encode()) is not None
        assert (len(trace_id), len(span_id)) == (32, 16)
