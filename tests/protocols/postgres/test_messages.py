"""Decoding and building messages: round trips, and refusals of malformed bodies."""

from __future__ import annotations

import base64

import pytest
import scramp

from protocols.errors import ProtocolViolation
from protocols.postgres import auth
from protocols.postgres import messages as m
from protocols.postgres.auth import ScramServerExchange, UpstreamLogin, md5_password


def test_startup_message_round_trip() -> None:
    built = m.StartupMessage.build({"user": "agent", "database": "orders", "application_name": "x"})
    decoded = m.decode_initial(built.raw)
    assert decoded == built
    assert isinstance(decoded, m.StartupMessage)
    assert (decoded.major, decoded.minor) == (3, 0)


@pytest.mark.parametrize(
    "message",
    [m.SSLRequest(), m.GSSENCRequest(), m.CancelRequest.build(1234, -5)],
)
def test_special_initial_messages_round_trip(message: m.InitialMessage) -> None:
    assert m.decode_initial(message.raw) == message


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"\x00\x00\x00\x08\x00\x02\x00\x00", "unsupported frontend protocol 2.0"),
        (m.StartupMessage.build({"user": "a"}).raw[:-1], "unterminated|truncated"),
        (b"\x00\x00\x00\x0c\x04\xd2\x16\x2e\x00\x00\x00\x01", "truncated"),  # short cancel
    ],
)
def test_malformed_initial_messages(raw: bytes, error: str) -> None:
    with pytest.raises(ProtocolViolation, match=error):
        m.decode_initial(raw)


def test_duplicate_startup_parameters_are_refused() -> None:
    body = (3 << 16).to_bytes(4, "big") + b"user\0a\0user\0b\0\0"
    with pytest.raises(ProtocolViolation, match="duplicate"):
        m.decode_initial((len(body) + 4).to_bytes(4, "big") + body)


def test_query_with_bytes_after_its_nul_is_refused() -> None:
    # The server would never see the tail, so the gateway must not classify it either.
    raw = m.frame(b"Q", b"select 1\0; drop table t\0")
    with pytest.raises(ProtocolViolation, match="trailing"):
        m.decode_frontend(raw)


def test_bind_decodes_parameters_including_null() -> None:
    body = (
        m.cstring("p1")
        + m.cstring("s1")
        + b"\x00\x01\x00\x00"  # one format code: text
        + b"\x00\x02"
        + b"\x00\x00\x00\x02hi"
        + b"\xff\xff\xff\xff"  # two params, one NULL
        + b"\x00\x00"  # no result formats
    )
    bind = m.decode_frontend(m.frame(b"B", body))
    assert isinstance(bind, m.Bind)
    assert (bind.portal, bind.statement, bind.params) == ("p1", "s1", (b"hi", None))


def test_bind_with_a_parameter_longer_than_the_message_is_refused() -> None:
    body = m.cstring("") + m.cstring("") + b"\x00\x00" + b"\x00\x01" + b"\x00\x00\x10\x00hi"
    with pytest.raises(ProtocolViolation, match="truncated"):
        m.decode_frontend(m.frame(b"B", body))


@pytest.mark.parametrize(
    "message",
    [
        m.ErrorResponse.build("ERROR", "42501", "denied", detail="d", hint="h"),
        m.NoticeResponse.build("held", detail="request 1"),
        m.ParameterStatus.build("client_encoding", "UTF8"),
        m.BackendKeyData.build(42, -7),
        m.ReadyForQuery.build("T"),
        m.NegotiateProtocolVersion.build(0, ("_pq_.x",)),
        m.AuthenticationMD5Password.build(b"salt"),
        m.AuthenticationSASL.build(("SCRAM-SHA-256",)),
    ],
)
def test_backend_messages_round_trip(message: m.BackendMessage) -> None:
    assert m.decode_backend(message.raw) == message


def test_ready_for_query_with_an_unknown_status_is_refused() -> None:
    with pytest.raises(ProtocolViolation):
        m.decode_backend(m.frame(b"Z", b"X"))


def test_password_message_repr_never_shows_the_password() -> None:
    message = m.PasswordMessage.build(b"eyJ.secret.token")
    assert "secret" not in repr(message)
    assert m.decode_password(message.raw).password == b"eyJ.secret.token"


def test_md5_password_matches_postgres() -> None:
    # Computed by PostgreSQL itself:
    # select 'md5' || md5(convert_to(md5('secretalice'), 'UTF8') || '\x01020304'::bytea)
    expected = b"md598a0412b9c31436fc53776e863350083"
    assert md5_password("alice", "secret", b"\x01\x02\x03\x04") == expected


def test_upstream_login_trust_sequence() -> None:
    login = UpstreamLogin("svc", None)
    assert login.receive(m.AuthenticationOk()) == b""
    login.receive(m.ParameterStatus.build("server_version", "15"))
    login.receive(m.BackendKeyData.build(1, 2))
    login.receive(m.ReadyForQuery.build("I"))
    assert login.ready is not None
    assert login.backend_key == m.BackendKeyData.build(1, 2)


def test_upstream_login_without_a_password_is_a_clear_error() -> None:
    from protocols.errors import LoginRefused

    with pytest.raises(LoginRefused, match="none is configured"):
        UpstreamLogin("svc", None).receive(m.AuthenticationMD5Password.build(b"salt"))


def test_scram_client_and_server_agree() -> None:
    from protocols.postgres.auth import ScramServerExchange, make_scram_auth_info

    stored = make_scram_auth_info("s3cret")
    server = ScramServerExchange(lambda user: stored if user == "svc" else None, "svc")
    client = UpstreamLogin("svc", "s3cret")
    first = client.receive(m.decode_backend(server.start()))
    server_first = server.client_first(first)
    final = client.receive(m.decode_backend(server_first))
    reply = server.client_final(final)
    assert isinstance(m.decode_backend(reply), m.AuthenticationSASLFinal)
    assert client.receive(m.decode_backend(reply)) == b""  # the client checked the server
    assert client.receive(m.AuthenticationOk()) == b""


# RFC 7677, section 3: the SCRAM-SHA-256 exchange for user "user", password "pencil".
RFC7677_CLIENT_FIRST = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC7677_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC7677_SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC7677_CLIENT_FINAL = (
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC7677_SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def rfc7677_server(
    monkeypatch: pytest.MonkeyPatch,
    password: str = "pencil",  # noqa: S107 (RFC 7677's example)
) -> ScramServerExchange:
    monkeypatch.setattr(auth, "_server_nonce", lambda: RFC7677_SERVER_NONCE)
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    stored = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
        password, iteration_count=4096, salt=salt
    )
    return ScramServerExchange(lambda _user: stored, "user")


def sasl_initial(data: str) -> bytes:
    return m.SASLInitialResponse.build("SCRAM-SHA-256", data.encode()).raw


def sasl_response(data: str) -> bytes:
    return m.SASLResponse.build(data.encode()).raw


def test_scram_server_follows_the_rfc_7677_example(monkeypatch: pytest.MonkeyPatch) -> None:
    server = rfc7677_server(monkeypatch)
    first = m.decode_backend(server.client_first(sasl_initial(RFC7677_CLIENT_FIRST)))
    assert isinstance(first, m.AuthenticationSASLContinue)
    assert first.data == RFC7677_SERVER_FIRST.encode()
    final = m.decode_backend(server.client_final(sasl_response(RFC7677_CLIENT_FINAL)))
    assert isinstance(final, m.AuthenticationSASLFinal)
    assert final.data == RFC7677_SERVER_FINAL.encode()


def test_scram_server_refuses_the_rfc_7677_proof_for_another_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from policy.errors import AuthenticationFailed

    server = rfc7677_server(monkeypatch, password="pencil2")
    server.client_first(sasl_initial(RFC7677_CLIENT_FIRST))
    with pytest.raises(AuthenticationFailed, match="password authentication failed"):
        server.client_final(sasl_response(RFC7677_CLIENT_FINAL))


@pytest.mark.parametrize(
    "client_final",
    [
        RFC7677_CLIENT_FINAL.replace("c=biws", "c=eSws"),  # says it sent `y`
        RFC7677_CLIENT_FINAL.replace("%hvY", "%hvZ"),  # not the server's nonce
        RFC7677_CLIENT_FINAL.replace("p=dHzb", "p=dHza"),  # a changed proof
        RFC7677_CLIENT_FINAL.rsplit(",", 1)[0],  # no proof
        RFC7677_CLIENT_FINAL.replace("p=dHzb", "p=!!!"),  # not base64
        RFC7677_CLIENT_FINAL[:-8] + "AAAA",  # a short proof
    ],
)
def test_scram_server_refuses_a_client_final_that_does_not_match(
    monkeypatch: pytest.MonkeyPatch, client_final: str
) -> None:
    from policy.errors import AuthenticationFailed

    server = rfc7677_server(monkeypatch)
    server.client_first(sasl_initial(RFC7677_CLIENT_FIRST))
    with pytest.raises(AuthenticationFailed, match="password authentication failed"):
        server.client_final(sasl_response(client_final))


def test_scram_server_takes_libpq_s_empty_user_name_and_y_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # libpq sends `n=` (the startup packet names the user) and, over TLS when the
    # server offers no channel binding, `y`.
    server = rfc7677_server(monkeypatch)
    first = m.decode_backend(server.client_first(sasl_initial("y,,n=,r=rOprNGfwEbeRWgbNEkqO")))
    assert isinstance(first, m.AuthenticationSASLContinue)
    assert first.data == RFC7677_SERVER_FIRST.encode()


@pytest.mark.parametrize(
    ("client_first", "message"),
    [
        ("p=tls-server-end-point,,n=,r=abc", "channel binding is not offered"),
        ("n,a=admin,n=,r=abc", "malformed"),  # an authzid
        ("x,,n=,r=abc", "malformed"),
        ("n,,r=abc", "malformed"),
        ("n,,n=,r=", "malformed"),
        ("n,,m=ext,n=,r=abc", "malformed"),
        ("n,,n=,r=abc,m=ext", "malformed"),
        ("n,n=,r=abc", "malformed"),
    ],
)
def test_scram_server_refuses_a_client_first_it_cannot_serve(
    monkeypatch: pytest.MonkeyPatch, client_first: str, message: str
) -> None:
    from policy.errors import AuthenticationFailed

    server = rfc7677_server(monkeypatch)
    with pytest.raises(AuthenticationFailed, match=message):
        server.client_first(sasl_initial(client_first))


def test_scram_server_refuses_a_wrong_password() -> None:
    from policy.errors import AuthenticationFailed
    from protocols.postgres.auth import ScramServerExchange, make_scram_auth_info

    stored = make_scram_auth_info("right")
    server = ScramServerExchange(lambda _user: stored, "svc")
    client = UpstreamLogin("svc", "wrong")
    first = client.receive(m.decode_backend(server.start()))
    final = client.receive(m.decode_backend(server.client_first(first)))
    with pytest.raises(AuthenticationFailed, match="password authentication failed"):
        server.client_final(final)
