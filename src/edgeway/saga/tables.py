"""The saga tables, in the service's own database (SQLite or PostgreSQL).

``<prefix>`` (default ``edgeway_saga``): one row per saga instance — status, JSON data, the index
of the step being run or compensated, the error, the request id, traceparent and tracestate it
started with, a ``version`` bumped by every state change (optimistic locking) and the claim of the
instance running it (``owner``, ``lease_until``).

``<prefix>_step``: one row per step of each saga — status, attempt and failure counters for the
action and the compensation, interruptions, the JSON result, the error, timestamps.

``<prefix>_ack``: the acknowledgements received for acknowledgement steps, one row per
(saga, step, service); written by whichever replica's consumer got the ack.

Times are UNIX seconds (float) so both databases compare them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import JSON, Column, Float, Index, Integer, MetaData, String, Table, Text

from edgeway.observability.context import MAX_TRACESTATE


@dataclass(frozen=True, slots=True)
class SagaTables:
    sagas: Table
    steps: Table
    acks: Table

    @property
    def all(self) -> tuple[Table, Table, Table]:
        return (self.sagas, self.steps, self.acks)


def saga_tables(metadata: MetaData, prefix: str = "edgeway_saga") -> SagaTables:
    """The three tables in ``metadata`` (returned as they are when already defined there)."""
    names = (prefix, f"{prefix}_step", f"{prefix}_ack")
    if all(name in metadata.tables for name in names):
        return SagaTables(*(metadata.tables[name] for name in names))
    sagas = Table(
        names[0],
        metadata,
        Column("id", String(64), primary_key=True),
        Column("name", String(64), nullable=False),
        Column("status", String(16), nullable=False),
        Column("data", JSON, nullable=False),
        Column("current_step", Integer, nullable=False),
        Column("error", Text, nullable=True),
        Column("request_id", String(128), nullable=True),
        Column("traceparent", String(64), nullable=True),
        # Added after the first release: nullable, so add_missing_columns adds it to old tables.
        Column("tracestate", String(MAX_TRACESTATE), nullable=True),
        Column("created_at", Float, nullable=False),
        Column("updated_at", Float, nullable=False),
        Column("finished_at", Float, nullable=True),
        Column("version", Integer, nullable=False),
        Column("owner", String(128), nullable=True),
        Column("lease_until", Float, nullable=True),
        # The claim scan: unfinished sagas whose lease is free or expired.
        Index(f"ix_{prefix}_claim", "status", "lease_until"),
        Index(f"ix_{prefix}_name_status", "name", "status"),
    )
    steps = Table(
        names[1],
        metadata,
        Column("saga_id", String(64), primary_key=True),
        Column("name", String(64), primary_key=True),
        Column("position", Integer, nullable=False),
        Column("status", String(24), nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("failures", Integer, nullable=False, default=0),
        Column("compensation_attempts", Integer, nullable=False, default=0),
        Column("compensation_failures", Integer, nullable=False, default=0),
        Column("interruptions", Integer, nullable=False, default=0),
        Column("result", JSON, nullable=True),
        Column("error", Text, nullable=True),
        Column("started_at", Float, nullable=True),
        Column("finished_at", Float, nullable=True),
        Column("compensated_at", Float, nullable=True),
    )
    acks = Table(
        names[2],
        metadata,
        Column("saga_id", String(64), primary_key=True),
        Column("step", String(64), primary_key=True),
        Column("service", String(64), primary_key=True),
        Column("acked_at", Float, nullable=False),
        Column("message_id", String(128), nullable=True),
    )
    return SagaTables(sagas, steps, acks)
