"""The transcript schema: one definition per event kind, one encoder that the C packer
(proxy/recording/event_chain.pyx) matches byte for byte, one decoder that reads back what the
encoder wrote."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import struct

import msgpack  # type: ignore[import-untyped]
import pytest

from proxy.recording import format
from proxy.recording.event_chain import EventChain
from proxy.recording.format import (
    ApprovalDecided,
    ApprovalRequested,
    EventData,
    Parameter,
    Result,
    SessionEnd,
    SessionStart,
    Statement,
    TokenRefreshed,
)

TS = 1_700_000_000.125
#: A Bind of one text parameter, 42, as a driver sends it.
_BIND_BODY = b"\x00\x00" + b"\x00\x00" + b"\x00\x01" + b"\x00\x00\x00\x0242" + b"\x00\x00"
BIND = b"B" + struct.pack("!i", 4 + len(_BIND_BODY)) + _BIND_BODY

#: One event of every kind, with every field the kind defines set.
EXAMPLES: list[EventData] = [
    SessionStart(
        session_id="s1",
        protocol="postgres",
        identity={"iss": "https://idp", "sub": "agent-1", "email": None, "groups": ["a"]},
        target="orders",
        client={"address": "127.0.0.1", "port": 5000, "tls": True},
        policy="ff" * 32,
        claims_seen=("groups", "sub"),
    ),
    Statement(sql="select 1", statement_class="read", decision="allow"),
    Statement(sql="select $1", statement_class="read", decision="allow", bind=BIND, types=(23,)),
    Statement(
        sql="update t set a = ?",
        statement_class="write",
        decision="approved by dba-1 (apr_1)",
        reasons=("UPDATE modifies data",),
        params=(Parameter("long", "42"), Parameter("blob", "00ff", "binary")),
    ),
    Statement(
        sql="update t set a = ?",
        statement_class="write",
        decision="approved for the session",
        reasons=("UPDATE modifies data",),
        execute=b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x08\x00\x2a\x00\x00\x00\x00\x00\x00\x00",
        num_params=1,
        param_types=b"\x08\x00",
        long_data={0: b"chunk"},
    ),
    ApprovalRequested(
        id="apr_1",
        sql="update t set a = $1",
        params=(Parameter("int4", "7"),),
        statement_class="write",
        hold="wait",
        approver_groups=("oncall-dba",),
        timeout_s=30.0,
    ),
    ApprovalDecided(
        id="apr_1",
        state="approved",
        by="dba-1",
        groups=("oncall-dba",),
        at=TS,
        scope="session",
        expires_at=TS + 900,
        ttl_s=900.0,
        comment="ticket 12",
        reason=None,
    ),
    Result(tag="SELECT 1"),
    Result(
        tag="SELECT 2", rows=2, row_data=(b"\x00\x01\x00\x00\x00\x011", b"\x00\x01"), rows_cut=True
    ),
    Result(tag="SELECT", rows=3, result_sets=2, duration_s=0.5),
    Result(tag="OK, 1 row affected", last_insert_id=7),
    Result(error={"errno": 1146, "sqlstate": "42S02", "message": "no such table"}),
    SessionEnd(reason="client closed the connection", statements=3),
    SessionEnd(reason="gone", error={"sqlstate": "08006", "message": "lost"}, statements=0),
    TokenRefreshed(
        exp=TS + 3600,
        jti="tok-2",
        iat=TS - 5,
        ends_at=TS + 3600,
        ends_because="token expires",
        via="api",
    ),
    TokenRefreshed(
        exp=TS + 90_000.5, ends_at=TS + 86_400, ends_because="session_ttl", via="statement"
    ),
]


def clock() -> float:
    return TS


def chain_after(events: int) -> tuple[EventChain, str]:
    """A chain with `events` events recorded and taken, and the hash its next links to."""
    chain = EventChain(clock)
    for _ in range(events):
        chain.result_tag("x")
    chain.take()
    return chain, chain.prev


def ids(example: EventData) -> str:
    return f"{example.KIND}-{sorted(example.to_data())}"


def test_every_kind_is_defined_once_and_has_an_example() -> None:
    kinds = {
        format.SESSION_START,
        format.STATEMENT,
        format.APPROVAL_REQUESTED,
        format.APPROVAL_DECIDED,
        format.RESULT,
        format.SESSION_END,
        format.TOKEN_REFRESHED,
    }
    assert set(format.KINDS) == kinds
    assert {example.KIND for example in EXAMPLES} == kinds


@pytest.mark.parametrize("example", EXAMPLES, ids=ids)
def test_the_c_packer_writes_every_kind_as_the_encoder_does(example: EventData) -> None:
    data = example.to_data()
    chain, prev = chain_after(5)
    expected = format.encode_event(5, TS, example.KIND, data, prev)
    chain.append(example.KIND, format.pack(data), TS)
    assert chain.take() == expected
    assert chain.prev == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize(
    "example",
    [
        e
        for e in EXAMPLES
        if isinstance(e, Statement)
        and set(e.to_data()) <= {"sql", "class", "decision", "bind", "types"}
    ],
    ids=ids,
)
def test_the_c_statement_event_is_the_encoders(example: Statement) -> None:
    """The hot path's own packing of an allowed statement, with or without its Bind."""
    chain, prev = chain_after(5)
    assert example.sql is not None
    assert example.statement_class is not None
    assert example.decision is not None
    if example.bind is None:
        chain.statement(example.sql, example.statement_class, example.decision)
    else:
        chain.statement(
            example.sql, example.statement_class, example.decision, example.bind, example.types
        )
    assert chain.take() == format.encode_event(5, TS, "statement", example.to_data(), prev)


def test_the_c_result_tag_event_is_the_encoders() -> None:
    chain, prev = chain_after(5)
    chain.result_tag("UPDATE 1")
    expected = format.encode_event(5, TS, "result", Result(tag="UPDATE 1").to_data(), prev)
    assert chain.take() == expected


@pytest.mark.parametrize("example", EXAMPLES, ids=ids)
def test_the_decoder_reads_back_what_the_encoder_wrote(example: EventData) -> None:
    record = msgpack.unpackb(
        format.encode_event(0, TS, example.KIND, example.to_data(), format.ZERO_HASH), raw=False
    )
    decoded = format.decode(record["kind"], record["data"])
    raw = isinstance(example, Statement) and (example.bind or example.execute) is not None
    if raw and isinstance(decoded, Statement):
        # Raw parameters come back decoded as well (and kept raw).
        assert decoded.params
        decoded = dataclasses.replace(decoded, params=None)
    assert decoded == example


def test_raw_parameters_of_both_protocols_decode_to_the_one_parameter_shape() -> None:
    bound = format.decode("statement", EXAMPLES[2].to_data())
    # COM_STMT_EXECUTE of one parameter, bound as an unsigned TINY 14 (what
    # mysql-connector sent in tests/proxy/fixtures/v1/mysql).
    execute = Statement(
        sql="select ?", execute=base64.b64decode("FyUAAAAAAQAAAAABAYAO"), num_params=1
    )
    executed = format.decode("statement", execute.to_data())
    assert isinstance(bound, Statement)
    assert isinstance(executed, Statement)
    assert bound.params == (Parameter("int4", "42", "text"),)
    assert executed.params is not None
    assert executed.params == (Parameter("unsigned tiny", "14", "text"),)


def test_version_1_shapes_read_as_the_current_definitions() -> None:
    old_pg = {"tag": "SELECT 2", "rows": [b"\x00\x01", b"\x00\x01"]}
    assert format.decode("result", old_pg, 1) == Result(
        tag="SELECT 2", rows=2, row_data=(b"\x00\x01", b"\x00\x01")
    )
    cut = format.decode("result", {"tag": "SELECT 9", "rows": [b"x"], "rows_cut": True}, 1)
    assert cut == Result(tag="SELECT 9", rows=None, row_data=(b"x",), rows_cut=True)
    requested = format.decode(
        "approval.requested", {"id": "apr_1", "parameters": [{"type": "int4", "value": "7"}]}, 1
    )
    assert isinstance(requested, ApprovalRequested)
    assert requested.params == (Parameter("int4", "7", "text"),)


def test_a_kind_the_format_does_not_define_keeps_its_data() -> None:
    unknown = format.decode("something.new", {"a": 1})
    assert unknown.to_data() == {"a": 1}
