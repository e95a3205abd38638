"""Random and nearly valid requests against the real gRPC server (emulator and a store behind it;
every test here runs once per backend, as the NUL hole showed only on PostgreSQL).

The server is the production chain: authentication (bearer tokens from a callers file, health
closed as with ``VAULT_PUBLIC_HEALTH=0``), then request decoding, then the servicer, which asks
the same authenticator who is calling. Every request below carries a valid token, so the fuzzed
message really reaches the code behind authentication; the ``authorization`` header itself is
fuzzed on its own, for every method.

Whatever a caller sends, each call ends with a status the contract names for it, never INTERNAL
or UNKNOWN; the server keeps serving; and a refused call changes nothing: no record, no event
and, for CreateSession, no call to Antom. Requests come three ways: a valid request with one
field made hostile, a message filled at random from its descriptor, and raw bytes on the wire.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import string
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from grpc import StatusCode
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import event, example, given
from hypothesis import strategies as st

from tests.fixtures.callers import Metadata, TokenFileEditor, bearer
from tests.fuzzing import fuzz_property
from tests.grpc_api.support import CREATE, bad_request
from tests.store.backends import Backend
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.domain import encode_resume_token
from vault_service.emulator import EmulatorServer
from vault_service.grpc_api import validation
from vault_service.grpc_api.auth import AuthenticationInterceptor, Authenticator
from vault_service.grpc_api.callers import VAULT_SCOPE, parse_callers
from vault_service.grpc_api.decoding import MALFORMED_MESSAGE
from vault_service.grpc_api.errors import Context
from vault_service.grpc_api.servicer import CallerOf, VaultServicer
from vault_service.service import ResultStreams, VaultingService
from vault_service.store import Store

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub

M = TypeVar("M", bound=Message)

SERVICE: Final = "/vault.v1.VaultService/"
HEALTH_CHECK: Final = "/grpc.health.v1.Health/Check"
CALLER: Final = "fuzzer"
EXISTING_ID: Final = "fz-existing"
CALL_TIMEOUT: Final = 10.0
ALLOWED: Final = frozenset(
    {
        StatusCode.OK,
        StatusCode.INVALID_ARGUMENT,
        StatusCode.NOT_FOUND,
        StatusCode.ALREADY_EXISTS,
        StatusCode.FAILED_PRECONDITION,
        StatusCode.UNAVAILABLE,
        StatusCode.DEADLINE_EXCEEDED,
    }
)
"""Every status the contract gives these RPCs to a caller with a valid token and the vault scope
(so never UNAUTHENTICATED or PERMISSION_DENIED: the fuzzed message must not change who the
caller is), and never INTERNAL or UNKNOWN, which would mean that our code, or grpc's around it,
broke on the request."""

FUZZ_SETTINGS: Final = fuzz_property(examples=150)
"""One server per test, shared by every example: the examples' deltas are what is checked."""


# --- the server under test, with a count of the calls that reached the servicer -------------


class Invocations:
    """Counts the calls that reached a servicer method (each asks ``caller_of`` first)."""

    def __init__(self, caller_of: CallerOf) -> None:
        self._caller_of = caller_of
        self.count = 0

    def caller_of(self, context: Context) -> Any:
        self.count += 1
        return self._caller_of(context)


@pytest.fixture
def token(token_file: TokenFileEditor) -> str:
    """The one valid token: the caller ``fuzzer`` with the vault scope."""
    return token_file.add(CALLER, VAULT_SCOPE)


@pytest.fixture
def authenticator(token: str, token_file: TokenFileEditor) -> Authenticator:
    """Bearer tokens only, from the callers file as the service parses it."""
    directory = parse_callers(token_file.path.read_bytes())
    return Authenticator(tokens=lambda: directory, certificates=None)


@pytest.fixture
def interceptors(authenticator: Authenticator) -> Sequence[grpc.aio.ServerInterceptor]:
    """Authentication ahead of the conftest server's decoding, as app.py wires it, with health
    closed so that the authorization fuzzing covers it too (reflection stays open)."""
    return [AuthenticationInterceptor(authenticator, open_health=False, open_reflection=True)]


@pytest.fixture
def invocations(authenticator: Authenticator) -> Invocations:
    return Invocations(authenticator.caller)


@pytest.fixture
def servicer(
    vaulting: VaultingService,
    streams: ResultStreams,
    invocations: Invocations,
    authenticator: Authenticator,
) -> VaultServicer:
    """The conftest's server, over a servicer whose entries are counted."""
    return VaultServicer(
        vaulting,
        streams,
        caller_of=invocations.caller_of,
        credentials_version=authenticator.version,
    )


@dataclass(frozen=True)
class Ledger:
    """Everything a call could have written: records, the event log head, Antom's sessions."""

    records: int
    last_event_id: int
    antom_creates: int


@dataclass(frozen=True)
class World:
    """The running server and what it writes to, for one property test."""

    stub: VaultServiceAsyncStub
    channel: grpc.aio.Channel
    store: Store
    backend: Backend
    emulator: EmulatorServer
    invocations: Invocations
    log: pytest.LogCaptureFixture
    token: str
    metadata: Metadata
    """The valid token's ``authorization`` header, sent with every fuzzed request."""
    resume_token: str
    """A checkpoint's token from this server's log: a valid place to resume from."""

    async def ledger(self) -> Ledger:
        return Ledger(
            records=await _count_records(self.backend),
            last_event_id=await self.store.last_event_id(),
            antom_creates=self.emulator.state.stats.calls(CREATE),
        )

    async def still_serving(self) -> None:
        """The server answers a health check after whatever the example sent it, and logged
        no error about it (grpc logs one for an exception that escaped a method)."""
        health = health_pb2_grpc.HealthStub(self.channel)
        answer = await health.Check(
            health_pb2.HealthCheckRequest(), metadata=self.metadata, timeout=CALL_TIMEOUT
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        errors = [r.getMessage() for r in self.log.records if r.levelno >= logging.ERROR]
        assert not errors


async def _count_records(backend: Backend) -> int:
    """Read straight from the database, so no store method can hide a stray row."""
    [(count,)] = await backend.query("SELECT count(*) FROM records")
    return int(count)


@pytest.fixture
def vault_store(each_backend_store: Store) -> Store:
    """The server's store: every test here runs on each backend."""
    return each_backend_store


@pytest.fixture
async def world(
    stub: VaultServiceAsyncStub,
    channel: grpc.aio.Channel,
    vault_store: Store,
    each_backend: Backend,
    emulator: EmulatorServer,
    invocations: Invocations,
    caplog: pytest.LogCaptureFixture,
    token: str,
) -> World:
    """The server with one session already created (so ids can collide with it) and a valid
    resume token taken from a stream's first checkpoint."""
    metadata = bearer(token)
    await stub.CreateSession(
        pb.CreateSessionRequest(vaulting_request_id=EXISTING_ID, labels={"k": "v"}),
        metadata=metadata,
        timeout=CALL_TIMEOUT,
    )
    stream = stub.StreamResults(pb.StreamResultsRequest(), metadata=metadata, timeout=CALL_TIMEOUT)
    async with _opened(stream) as s:
        first = await s.read()
    assert isinstance(first, pb.StreamResultsResponse)
    assert await _count_records(each_backend) == 1
    return World(
        stub,
        channel,
        vault_store,
        each_backend,
        emulator,
        invocations,
        caplog,
        token,
        metadata,
        first.checkpoint.resume_token,
    )


@contextlib.asynccontextmanager
async def _opened(call: Any) -> AsyncIterator[Any]:
    """A streaming call that is cancelled on the way out, however the block ends."""
    try:
        yield call
    finally:
        call.cancel()


# --- hostile values -------------------------------------------------------------------------

INT32: Final = st.integers(-(2**31), 2**31 - 1)
_control = st.text(st.characters(max_codepoint=0x1F) | st.sampled_from("\x7f\x85\u2028"))
HOSTILE_TEXT: Final = st.one_of(
    st.just(""),
    st.text(max_size=80),  # any Unicode but surrogates, which a proto string cannot carry
    _control,
    st.text(max_size=20).map(lambda text: f"{text}\x00{text}"),
    st.sampled_from([" ", "\u200b", "\ufeff", "é", "😀" * 3, "A" * 2, "\U0001d518\U0001d52b"]),
    st.integers(0, 70).map("x".__mul__),  # around the 64-character limits
    st.sampled_from([63, 64, 65, 128, 129, 256, 257, 2048, 2049, 4096, 100_000]).map("y".__mul__),
)
BAD_URLS: Final = st.sampled_from(
    [
        "javascript:alert(1)",
        "http://",
        "https://[::1",
        "https://[zz]/",
        "ftp://shop.example/",
        "//shop.example/path",
        "http://exa mple.com/",
        "https://user@:80/",
        "https://shop.example:99999/",
        "http://\x00/",
        "https://shop.example/\r\nX-Injected: 1",
        "HTTPS://SHOP.EXAMPLE/",
        "https://" + "a" * 2050,
        "data:text/html,hi",
        "http://127.0.0.1:0/",
    ]
)


def _random_json() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@st.composite
def _resume_tokens(draw: st.DrawFn, valid: str) -> str:
    """Valid, damaged, forged and foreign tokens (``valid`` is one of this server's)."""
    body = valid.removeprefix("v1.")
    choice = draw(st.integers(0, 7))
    if choice == 0:
        return valid
    if choice == 1:  # damaged: cut, a character changed, or something appended
        cut = draw(st.integers(0, len(valid)))
        return draw(
            st.sampled_from(
                [valid[:cut], valid[:cut] + "A" + valid[cut + 1 :], valid + draw(HOSTILE_TEXT)]
            )
        )
    if choice == 2:  # random bytes, in base64 or as Latin-1 text
        raw = draw(st.binary(max_size=120))
        return draw(st.sampled_from(["v1." + _b64(raw), raw.decode("latin-1"), _b64(raw)]))
    if choice == 3:  # well-formed JSON of the wrong shape
        return "v1." + _b64(json.dumps(draw(_random_json())).encode())
    if choice == 4:  # the right shape, naming another log or an absurd position
        log_id = draw(st.text(string.hexdigits.lower(), min_size=0, max_size=40))
        position = draw(st.integers(-(2**70), 2**70))
        return "v1." + _b64(json.dumps([log_id, position]).encode())
    if choice == 5:  # a genuine token of another log
        return encode_resume_token(draw(st.text("0123456789abcdef", min_size=32, max_size=32)), 1)
    if choice == 6:  # this log's token, re-encoded with padding or other spacing
        decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return draw(
            st.sampled_from(
                [
                    valid + "==",
                    "v1." + _b64(json.dumps(json.loads(decoded), indent=1).encode()),
                    "V1." + body,
                ]
            )
        )
    return draw(HOSTILE_TEXT)


# --- messages filled at random from their descriptors ---------------------------------------


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return HOSTILE_TEXT
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_ENUM}:
        return INT32  # enums are open in proto3: unknown numbers reach the server as sent
    raise AssertionError(f"no strategy for {field.full_name}: add one for its type")


def _fill(draw: st.DrawFn, message: Message, depth: int = 0) -> None:
    """Set a random subset of ``message``'s fields to random values, recursing into
    sub-messages; an unhandled field type fails the test rather than going unfuzzed."""
    for field in message.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            keys = field.message_type.fields_by_name["key"]
            values = field.message_type.fields_by_name["value"]
            value.update(draw(st.dictionaries(_scalar(keys), _scalar(values), max_size=20)))
        elif field.is_repeated:
            value.extend(draw(st.lists(_scalar(field), max_size=120)))
        elif field.message_type is not None:
            value.SetInParent()
            if depth < 3:
                _fill(draw, value, depth + 1)
        else:
            setattr(message, field.name, draw(_scalar(field)))


@st.composite
def random_messages(draw: st.DrawFn, message_type: type[M]) -> M:
    message = message_type()
    _fill(draw, message)
    return message


# --- nearly valid requests: a valid one with one field made hostile -------------------------

FRESH_IDS: Final = st.uuids().map(lambda uuid: f"fz-{uuid.hex[:16]}")
REQUEST_IDS: Final = FRESH_IDS | st.just(EXISTING_ID) | HOSTILE_TEXT


def _valid_create(vaulting_request_id: str) -> pb.CreateSessionRequest:
    return pb.CreateSessionRequest(
        vaulting_request_id=vaulting_request_id,
        payment_method_type="CARD",
        redirect_url="https://shop.example/done?order=1",
        merchant_region="SG",
        is_3ds_authentication=True,
        labels={"order": "o-1", "team": "checkout"},
        env=pb.Env(
            terminal_type=pb.TERMINAL_TYPE_WEB,
            user_agent="Mozilla/5.0",
            client_ip="203.0.113.7",
            screen_width=1920,
            screen_height=1080,
            color_depth=24,
            time_zone_offset=-120,
            browser_info=pb.BrowserInfo(language="en-US", java_script_enabled=True),
        ),
    )


Mutation = Callable[[pb.CreateSessionRequest], None]


def _setting(path: str, value: Any) -> Mutation:
    """Set the field at a dotted proto path (``env.browser_info.language``); ``None`` clears."""
    *parents, name = path.split(".")

    def mutate(request: pb.CreateSessionRequest) -> None:
        message: Message = request
        for parent in parents:
            message = getattr(message, parent)
        if value is None:
            message.ClearField(name)
        elif isinstance(value, dict):
            getattr(message, name).clear()
            getattr(message, name).update(value)
        else:
            setattr(message, name, value)

    return mutate


_create_strings = [
    "payment_method_type",
    "merchant_region",
    *(f"env.{name}" for name in ("user_agent", "device_token_id", "client_ip", "cookie_id")),
    *(f"env.{name}" for name in ("device_language", "device_brand", "device_model")),
    *(f"env.{name}" for name in ("device_id", "os_version")),
    *(f"env.browser_info.{name}" for name in ("accept_header", "language", "user_agent")),
]
_create_ints = [
    "env.terminal_type",
    "env.os_type",
    "env.screen_width",
    "env.screen_height",
    "env.color_depth",
    "env.time_zone_offset",
]
_label_maps = st.one_of(
    st.dictionaries(HOSTILE_TEXT, HOSTILE_TEXT, max_size=20),
    st.integers(15, 300).map(lambda n: {f"k{i}": "v" for i in range(n)}),
    st.sampled_from([{"": "v"}, {"k" * 64: "v"}, {"k": "v" * 257}, {"\x00": "\x00"}, {"é": "😀"}]),
)
CREATE_MUTATIONS: Final = st.one_of(
    st.builds(_setting, st.just("vaulting_request_id"), HOSTILE_TEXT),
    st.builds(_setting, st.sampled_from(_create_strings), HOSTILE_TEXT),
    st.builds(_setting, st.just("redirect_url"), BAD_URLS | HOSTILE_TEXT),
    st.builds(_setting, st.sampled_from(_create_ints), INT32 | st.sampled_from([-1, 0, 721])),
    st.builds(_setting, st.just("labels"), _label_maps),
    st.builds(
        _setting,
        st.sampled_from(
            [
                "is_3ds_authentication",
                "env",
                "env.time_zone_offset",
                "env.browser_info",
                "env.browser_info.java_enabled",
            ]
        ),
        st.none(),
    ),
)


@st.composite
def nearly_valid_creates(draw: st.DrawFn) -> pb.CreateSessionRequest:
    request = _valid_create(draw(FRESH_IDS | st.just(EXISTING_ID)))
    for mutate in draw(st.lists(CREATE_MUTATIONS, min_size=0, max_size=2)):
        mutate(request)
    return request


CREATE_REQUESTS: Final = nearly_valid_creates() | random_messages(pb.CreateSessionRequest)
GET_REQUESTS: Final = st.builds(
    pb.GetResultRequest, vaulting_request_id=REQUEST_IDS, refresh=st.booleans()
) | random_messages(pb.GetResultRequest)


@st.composite
def stream_requests(draw: st.DrawFn, valid_token: str) -> pb.StreamResultsRequest:
    ids = st.lists(REQUEST_IDS, max_size=5)
    duplicated = FRESH_IDS.flatmap(lambda i: st.integers(2, 120).map(lambda n: [i] * n))
    many = st.integers(99, 400).map(lambda n: [f"fz-{i}" for i in range(n)])
    if draw(st.booleans()):
        return draw(random_messages(pb.StreamResultsRequest))
    return pb.StreamResultsRequest(
        resume_token=draw(st.just("") | _resume_tokens(valid_token)),
        vaulting_request_ids=draw(ids | duplicated | many),
    )


# --- calls and their checks -------------------------------------------------------------------


async def _unary_code(call: Any) -> tuple[StatusCode, Any]:
    try:
        return StatusCode.OK, await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error


def _check_code(code: StatusCode, outcome: Any) -> None:
    event(code.name)  # the spread of answers, for --hypothesis-show-statistics
    assert code in ALLOWED, (code, outcome)


@FUZZ_SETTINGS
@given(request=CREATE_REQUESTS)
async def test_create_session_answers_cleanly_and_stores_nothing_when_refused(
    world: World, request: pb.CreateSessionRequest
) -> None:
    """Guards CreateSession against hostile requests: an allowed status; a refusal leaves no
    record and calls Antom not at all; a success stores exactly the session it created."""
    before = await world.ledger()
    code, outcome = await _unary_code(
        world.stub.CreateSession(request, metadata=world.metadata, timeout=CALL_TIMEOUT)
    )
    _check_code(code, outcome)
    after = await world.ledger()
    if code == StatusCode.OK:
        created = int(outcome.created)
        assert outcome.vaulting_request_id == request.vaulting_request_id
        assert after == Ledger(
            before.records + created, before.last_event_id, before.antom_creates + created
        )
        assert await world.store.get(request.vaulting_request_id) is not None
    else:
        assert after == before
    await world.still_serving()


@FUZZ_SETTINGS
@given(request=GET_REQUESTS)
async def test_get_result_answers_cleanly_and_writes_nothing_when_refused(
    world: World, request: pb.GetResultRequest
) -> None:
    """Guards GetResult against hostile requests: an allowed status; never a new record or an
    Antom session; only a successful refresh may append an event (what Antom reported)."""
    before = await world.ledger()
    code, outcome = await _unary_code(
        world.stub.GetResult(request, metadata=world.metadata, timeout=CALL_TIMEOUT)
    )
    _check_code(code, outcome)
    after = await world.ledger()
    if code == StatusCode.OK and request.refresh:
        assert (after.records, after.antom_creates) == (before.records, before.antom_creates)
        assert after.last_event_id >= before.last_event_id
    else:
        assert after == before
    if code == StatusCode.OK:
        assert outcome.result.vaulting_request_id == request.vaulting_request_id
    await world.still_serving()


async def _first_stream_answer(call: Any) -> tuple[StatusCode, Any]:
    """The stream's first message (a Checkpoint when it opened) or the status it ended with."""
    async with _opened(call):
        try:
            return StatusCode.OK, await call.read()
        except grpc.aio.AioRpcError as error:
            return error.code(), error


@FUZZ_SETTINGS
@given(data=st.data())
async def test_stream_results_opens_or_refuses_cleanly_and_writes_nothing(
    world: World, data: st.DataObject
) -> None:
    """Guards StreamResults against hostile filters and resume tokens (forged, damaged, of
    another log): it opens with a Checkpoint or is refused with an allowed status before its
    first message, and writes nothing either way."""
    request = data.draw(stream_requests(world.resume_token))
    before = await world.ledger()
    code, first = await _first_stream_answer(
        world.stub.StreamResults(request, metadata=world.metadata, timeout=CALL_TIMEOUT)
    )
    _check_code(code, first)
    if code == StatusCode.OK:
        assert first is not grpc.aio.EOF
        assert first.WhichOneof("kind") == "checkpoint"
    assert await world.ledger() == before
    await world.still_serving()


# --- raw bytes on the wire ------------------------------------------------------------------

REQUEST_TYPES: Final[dict[str, type[Message]]] = {
    "CreateSession": pb.CreateSessionRequest,
    "GetResult": pb.GetResultRequest,
    "StreamResults": pb.StreamResultsRequest,
}


def _field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) with a one-byte tag and length."""
    assert number < 16
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


@st.composite
def wire_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A method and the bytes sent as its request: noise, a valid message damaged (cut, a
    byte changed, junk appended), a string that is not UTF-8, or unknown fields."""
    method = draw(st.sampled_from(sorted(REQUEST_TYPES)))
    valid = draw(random_messages(REQUEST_TYPES[method])).SerializeToString()
    cut = draw(st.integers(0, len(valid)))
    noise = draw(st.binary(max_size=200))
    not_utf8 = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"ok\xfe"]))
    raw = draw(
        st.sampled_from(
            [
                noise,
                valid[:cut],
                valid[:cut] + bytes([draw(st.integers(0, 255))]) + valid[cut + 1 :],
                valid + noise,
                _field_bytes(1, not_utf8),
                valid + _field_bytes(draw(st.integers(8, 15)), noise[:100]),
            ]
        )
    )
    return method, raw


def _parses(message_type: type[Message], raw: bytes) -> bool:
    try:
        message_type.FromString(raw)
    except DecodeError:
        return False
    return True


@FUZZ_SETTINGS
@given(wire=wire_requests())
async def test_raw_request_bytes_are_parsed_or_refused_as_invalid_argument(
    world: World, wire: tuple[str, bytes]
) -> None:
    """Guards the parsing of requests: bytes that are not the message are INVALID_ARGUMENT
    (with a fixed message) before any method runs; bytes that parse are an ordinary request;
    either way an allowed status and nothing written unless a call succeeded."""
    method, raw = wire
    path = SERVICE + method
    parses = _parses(REQUEST_TYPES[method], raw)
    entered = world.invocations.count
    before = await world.ledger()
    if method == "StreamResults":
        call = world.channel.unary_stream(path)(raw, metadata=world.metadata, timeout=CALL_TIMEOUT)
        code, outcome = await _first_stream_answer(call)
    else:
        code, outcome = await _unary_code(
            world.channel.unary_unary(path)(raw, metadata=world.metadata, timeout=CALL_TIMEOUT)
        )
    event(f"parses={parses}")
    _check_code(code, outcome)
    if not parses:
        assert code == StatusCode.INVALID_ARGUMENT
        assert outcome.details() == MALFORMED_MESSAGE
        assert world.invocations.count == entered, "the servicer ran on an unparsed request"
    if code != StatusCode.OK:
        assert await world.ledger() == before
    await world.still_serving()


# --- the authorization header itself ------------------------------------------------------------

PRINTABLE: Final = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
"""What a text metadata value may hold: grpc's client refuses anything else before sending."""
HUGE_VALUE: Final = 7_000
"""The longest ``authorization`` value sent: with the small ones beside it (two, up to ~130
bytes each) and the call's own headers, a call stays under grpc's 8 KiB soft metadata limit,
beyond which the server refuses calls at random with RESOURCE_EXHAUSTED before our code runs."""
SCHEMES: Final = st.sampled_from(
    ["Bearer", "bearer", "BEARER", "bEaReR", "Bearer:", "Bearerx", "Basic", "Token", ""]
)
SEPARATORS: Final = st.sampled_from([" ", "  ", "     ", "", ":", "="])
UNPARSEABLE: Final = _field_bytes(1, b"abcde")[:-3]
"""A string field cut short: no request type parses it (sent to see whether authentication
still comes before decoding)."""


@st.composite
def _near_tokens(draw: st.DrawFn, token: str) -> str:
    """The token, or something one step away from it."""
    at = draw(st.integers(0, len(token) - 1))
    return draw(
        st.sampled_from(
            [
                token,
                token[:-1],
                token[1:],
                token + draw(st.text(PRINTABLE, min_size=1, max_size=3)),
                token[:at] + "?" + token[at + 1 :],
                token.swapcase(),
                token[::-1],
                token + " ",
                f"{token} {token}",
            ]
        )
    )


def _small_values(token: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(""),
        st.text(PRINTABLE, max_size=80),
        st.builds("{}{}{}".format, SCHEMES, SEPARATORS, _near_tokens(token)),
        st.builds("{}{}{}".format, SCHEMES, SEPARATORS, st.text(PRINTABLE, max_size=80)),
    )


HUGE_VALUES: Final = st.one_of(
    st.builds(  # around the longest token accepted, and far beyond it
        "{} {}".format,
        SCHEMES,
        st.sampled_from([4095, 4096, 4097, HUGE_VALUE - 7]).map("t".__mul__),
    ),
    st.integers(100, HUGE_VALUE).map("A".__mul__),
)


def authorization_headers(token: str) -> st.SearchStrategy[list[str]]:
    """The ``authorization`` values of one call: none, one or several small ones; a huge one,
    alone or among small ones; or the valid token alone, spelled a way the rule accepts."""
    small = _small_values(token)
    spelled = st.builds(
        "{}{}{}".format,
        st.sampled_from(["Bearer", "bearer", "BEARER"]),
        st.sampled_from([" ", "  ", "     "]),
        st.just(token),
    )
    return st.one_of(
        st.lists(small, max_size=4),
        st.builds(lambda huge, others: [huge, *others], HUGE_VALUES, st.lists(small, max_size=2)),
        spelled.map(lambda value: [value]),
    )


def _names_the_token(values: Sequence[str], token: str) -> bool:
    """Whether a call with these headers is the valid caller's, by the documented rule (one
    header, the word Bearer in any case, spaces, then exactly the token), written apart from
    the authenticator's own pattern so that the two check each other."""
    if len(values) != 1:
        return False
    scheme, space, rest = values[0].partition(" ")
    return scheme.lower() == "bearer" and space == " " and rest.lstrip(" ") == token


AUTH_METHODS: Final = ("CreateSession", "GetResult", "StreamResults", "Health")


@st.composite
def guarded_calls(draw: st.DrawFn) -> tuple[str, bytes]:
    """A method behind authentication and the bytes of a request to it: valid, or unparseable."""
    method = draw(st.sampled_from(AUTH_METHODS))
    request: Message = {
        "CreateSession": pb.CreateSessionRequest(vaulting_request_id=draw(FRESH_IDS)),
        "GetResult": pb.GetResultRequest(vaulting_request_id=EXISTING_ID),
        "StreamResults": pb.StreamResultsRequest(),
        "Health": health_pb2.HealthCheckRequest(),
    }[method]
    return method, draw(st.sampled_from([request.SerializeToString(), UNPARSEABLE]))


def _answered_text(outcome: Any) -> str:
    """All a refused call tells its caller: the status message and the trailing metadata."""
    if not isinstance(outcome, grpc.aio.AioRpcError):
        return ""
    trailers = [f"{key}: {value!r}" for key, value in outcome.trailing_metadata() or ()]
    return "\n".join([outcome.details() or "", *trailers])


async def _guarded_answer(
    world: World, method: str, raw: bytes, metadata: Metadata
) -> tuple[StatusCode, Any]:
    path = HEALTH_CHECK if method == "Health" else SERVICE + method
    if method == "StreamResults":
        call = world.channel.unary_stream(path)(raw, metadata=metadata, timeout=CALL_TIMEOUT)
        return await _first_stream_answer(call)
    return await _unary_code(
        world.channel.unary_unary(path)(raw, metadata=metadata, timeout=CALL_TIMEOUT)
    )


def _check_accepted(method: str, answer: bytes, before: Ledger, after: Ledger) -> None:
    """What the valid caller's valid request gets from each method."""
    if method == "CreateSession":
        assert pb.CreateSessionResponse.FromString(answer).created
        assert after == Ledger(before.records + 1, before.last_event_id, before.antom_creates + 1)
        return
    assert after == before
    if method == "GetResult":
        assert pb.GetResultResponse.FromString(answer).result.vaulting_request_id == EXISTING_ID
    elif method == "StreamResults":
        assert pb.StreamResultsResponse.FromString(answer).WhichOneof("kind") == "checkpoint"
    else:
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health_pb2.HealthCheckResponse.FromString(answer).status == serving


@FUZZ_SETTINGS
@given(data=st.data(), call=guarded_calls())
async def test_authorization_headers_admit_only_the_exact_token(
    world: World, data: st.DataObject, call: tuple[str, bytes]
) -> None:
    """Guards authentication on every guarded method (health closed): whatever the
    ``authorization`` headers (none, several, empty, huge, another scheme or case, junk after
    Bearer, a token one step off), the answer is UNAUTHENTICATED, before the request is decoded
    and before the servicer runs, with nothing written and no piece of the token in what the
    caller is told or in the log; only the exact valid token gets the method's own answer."""
    method, raw = call
    values = data.draw(authorization_headers(world.token), label="authorization")
    accepted = _names_the_token(values, world.token)
    event(f"accepted={accepted}")
    entered = world.invocations.count
    before = await world.ledger()
    metadata = tuple(("authorization", value) for value in values)
    code, outcome = await _guarded_answer(world, method, raw, metadata)
    event(code.name)
    after = await world.ledger()
    if not accepted:
        assert code == StatusCode.UNAUTHENTICATED, (code, outcome)
        assert (after, world.invocations.count) == (before, entered)
    elif raw == UNPARSEABLE:
        assert (code, outcome.details()) == (StatusCode.INVALID_ARGUMENT, MALFORMED_MESSAGE)
        assert (after, world.invocations.count) == (before, entered)
    else:
        assert code == StatusCode.OK, (code, outcome)
        _check_accepted(method, outcome, before, after)
    told = _answered_text(outcome)
    logged = "\n".join(str(vars(record)) for record in world.log.records)
    for piece in (world.token[:16], world.token[-16:]):
        assert piece not in told
        assert piece not in logged
    await world.still_serving()


# --- control characters in any string field (issue 9) -----------------------------------------

CONTROL_CHARACTERS: Final = st.characters(max_codepoint=0x1F) | st.just("\x7f")
_CREATE_STRING_FIELDS: Final = [
    "vaulting_request_id",
    "payment_method_type",
    "redirect_url",
    "merchant_region",
    "labels (key)",
    "labels (value)",
    *_create_strings,
]
ControlledCall = tuple[str, Message, str]
"""A method, a request to it with one control character in one string field, and the field
path the refusal must name."""


@st.composite
def controlled_calls(draw: st.DrawFn) -> ControlledCall:
    """A valid request of any method with one C0 control or DEL put into one string field, at
    any place of its valid value."""
    control = draw(CONTROL_CHARACTERS)

    def spoiled(text: str) -> str:
        at = draw(st.integers(0, len(text)))
        return text[:at] + control + text[at:]

    method = draw(st.sampled_from(sorted(REQUEST_TYPES)))
    if method == "GetResult":
        return (
            method,
            pb.GetResultRequest(vaulting_request_id=spoiled(EXISTING_ID)),
            "vaulting_request_id",
        )
    if method == "StreamResults":
        if draw(st.booleans()):
            ids = [draw(FRESH_IDS), spoiled(draw(FRESH_IDS))]
            return (
                method,
                pb.StreamResultsRequest(vaulting_request_ids=ids),
                "vaulting_request_ids[1]",
            )
        token = spoiled(encode_resume_token("0" * 32, draw(st.integers(1, 10**6))))
        return method, pb.StreamResultsRequest(resume_token=token), "resume_token"
    request = _valid_create(draw(FRESH_IDS))
    field = draw(st.sampled_from(_CREATE_STRING_FIELDS))
    if field.startswith("labels"):
        key, value = ("order", "o-1")
        labels = {spoiled(key): value} if field.endswith("(key)") else {key: spoiled(value)}
        _setting("labels", labels)(request)
        return method, request, "labels"
    message: Message = request
    *parents, name = field.split(".")
    for parent in parents:
        message = getattr(message, parent)
    setattr(message, name, spoiled(getattr(message, name)))
    return method, request, field


_CRLF_REDIRECT = _valid_create("fz-crlf")
_CRLF_REDIRECT.redirect_url += "\r\nX-Injected: 1"


@FUZZ_SETTINGS
@given(call=controlled_calls())
@example(call=("CreateSession", _CRLF_REDIRECT, "redirect_url"))
async def test_control_characters_are_refused_in_every_string_field(
    world: World, call: ControlledCall
) -> None:
    """Guards issue 9 #16 and the control-character rule: a C0 control or DEL in any string
    field of any request is INVALID_ARGUMENT with a BadRequest violation naming that field,
    before anything is written or Antom is called (CR/LF in redirect_url used to be accepted,
    stored and sent to Antom raw)."""
    method, request, field = call
    if method == "CreateSession" and field != "vaulting_request_id":
        # A fresh id for each call, so that an accepted request shows as such, not as a
        # collision with an earlier example's.
        request = pb.CreateSessionRequest.FromString(request.SerializeToString())
        request.vaulting_request_id = f"fz-{uuid.uuid4().hex[:16]}"
    raw = request.SerializeToString()
    before = await world.ledger()
    if method == "StreamResults":
        stream = world.channel.unary_stream(SERVICE + method)
        code, outcome = await _first_stream_answer(
            stream(raw, metadata=world.metadata, timeout=CALL_TIMEOUT)
        )
    else:
        code, outcome = await _unary_code(
            world.channel.unary_unary(SERVICE + method)(
                raw, metadata=world.metadata, timeout=CALL_TIMEOUT
            )
        )
    assert code == StatusCode.INVALID_ARGUMENT, (code, outcome)
    assert field in bad_request(outcome), bad_request(outcome)
    assert await world.ledger() == before
    await world.still_serving()


# --- regressions the fuzzing found --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "nul_request"),
    [
        ("labels", pb.CreateSessionRequest(labels={"order": "o\x001"})),
        ("labels", pb.CreateSessionRequest(labels={"\x00": "v"})),
        ("redirect_url", pb.CreateSessionRequest(redirect_url="https://shop.example/\x00")),
        ("env.user_agent", pb.CreateSessionRequest(env=pb.Env(user_agent="Mozilla\x00"))),
        (
            "env.browser_info.language",
            pb.CreateSessionRequest(env=pb.Env(browser_info=pb.BrowserInfo(language="en\x00"))),
        ),
    ],
)
async def test_control_characters_are_refused_before_antom_is_called(
    world: World, field: str, nul_request: pb.CreateSessionRequest
) -> None:
    """Guards the NUL hole: CreateSession accepted NUL in labels, the redirect URL and the env
    strings, called Antom, and then PostgreSQL refused to store the record (no NUL in text or
    jsonb), so the caller got INTERNAL with Antom's session already made. Now it is
    INVALID_ARGUMENT naming the field, with no Antom call and nothing stored."""
    nul_request.vaulting_request_id = "fz-nul"
    before = await world.ledger()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await world.stub.CreateSession(nul_request, metadata=world.metadata, timeout=CALL_TIMEOUT)
    assert refused.value.code() == StatusCode.INVALID_ARGUMENT
    assert bad_request(refused.value) == {field: validation.CONTROL_CHARACTER_RULE}
    assert await world.ledger() == before
