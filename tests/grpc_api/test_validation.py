"""Request validation: every rule, all violations at once, and no other outcome for any input."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.errors import InvalidArgumentError
from vault_service.grpc_api import mapping, validation

LONGEST_VALID = pb.CreateSessionRequest(
    vaulting_request_id="~" * 64,
    payment_method_type="CARD",
    redirect_url="https://shop.example/" + "p" * (2048 - len("https://shop.example/")),
    merchant_region="BR",
    is_3ds_authentication=False,
    labels={f"{n:02d}" + "k" * 61: "v" * 256 for n in range(16)},
    env=pb.Env(
        terminal_type=pb.TERMINAL_TYPE_MINI_APP,
        os_type=pb.OS_TYPE_ANDROID,
        user_agent="u" * 2048,
        device_token_id="t" * 64,
        client_ip="2001:db8::1",
        cookie_id="c" * 256,
        device_language="l" * 64,
        screen_width=3840,
        screen_height=2160,
        color_depth=48,
        time_zone_offset=-720,
        browser_info=pb.BrowserInfo(
            accept_header="a" * 2048,
            java_enabled=True,
            java_script_enabled=False,
            language="l" * 64,
            user_agent="u" * 2048,
        ),
        device_brand="b" * 64,
        device_model="m" * 128,
        device_id="d" * 256,
        os_version="o" * 64,
    ),
)


def test_a_request_at_every_limit_is_valid() -> None:
    """Every field at its maximum is still accepted: limits are inclusive."""
    assert validation.create_session_violations(LONGEST_VALID) == {}


def test_every_violation_is_reported_at_once() -> None:
    """A request wrong in many ways gets one answer naming every wrong field, and several
    problems of one field are joined in its description."""
    request = pb.CreateSessionRequest(
        vaulting_request_id="",
        payment_method_type="card",
        redirect_url="javascript:alert(1)",
        merchant_region="U",
        labels={f"k{n}": "v" * 300 for n in range(17)},
        env=pb.Env(
            terminal_type=pb.TerminalType.ValueType(17),
            os_type=pb.OsType.ValueType(-1),
            user_agent="u" * 2049,
            device_token_id="t" * 65,
            client_ip="256.1.1.1",
            screen_height=-5,
            color_depth=3,
            time_zone_offset=-721,
            browser_info=pb.BrowserInfo(language="x" * 65),
            device_model="m" * 129,
        ),
    )
    violations = validation.create_session_violations(request)
    assert set(violations) == {
        "vaulting_request_id",
        "payment_method_type",
        "redirect_url",
        "merchant_region",
        "labels",
        "env.terminal_type",
        "env.os_type",
        "env.user_agent",
        "env.device_token_id",
        "env.client_ip",
        "env.screen_height",
        "env.color_depth",
        "env.time_zone_offset",
        "env.browser_info.language",
        "env.device_model",
    }
    assert "16 entries" in violations["labels"]
    assert "256 characters" in violations["labels"]


def test_violations_do_not_echo_caller_values() -> None:
    """Descriptions state rules only, so a mistaken secret in a field is not reflected back."""
    request = pb.CreateSessionRequest(
        vaulting_request_id="secret value", redirect_url="secret://value"
    )
    violations = validation.create_session_violations(request)
    assert violations
    assert not any("secret" in why for why in violations.values())


def test_get_result_and_stream_results_check_ids_and_tokens() -> None:
    """The other requests apply the same id rule; streams also bound ids and tokens."""
    assert validation.get_result_violations(pb.GetResultRequest()) == {
        "vaulting_request_id": "is required"
    }
    assert validation.stream_results_violations(pb.StreamResultsRequest()) == {}
    violations = validation.stream_results_violations(
        pb.StreamResultsRequest(
            resume_token="t" * 201,
            vaulting_request_ids=["ok", "x" * 65, *(f"vr-{n}" for n in range(100))],
        )
    )
    assert set(violations) == {"resume_token", "vaulting_request_ids", "vaulting_request_ids[1]"}


def test_ensure_valid_raises_only_with_violations() -> None:
    """No violations: nothing happens; any: InvalidArgumentError carrying all of them."""
    validation.ensure_valid({})
    with pytest.raises(InvalidArgumentError) as refused:
        validation.ensure_valid({"labels": "too many"})
    assert refused.value.violations == {"labels": "too many"}


KNOWN_PATHS = (
    {
        "vaulting_request_id",
        "payment_method_type",
        "redirect_url",
        "merchant_region",
        "labels",
    }
    | {f"env.{name}" for name in pb.Env.DESCRIPTOR.fields_by_name}
    | {f"env.browser_info.{name}" for name in pb.BrowserInfo.DESCRIPTOR.fields_by_name}
)

texts = st.text(st.characters(codec="utf-8"), max_size=80)
ids = st.one_of(texts, st.from_regex(r"[!-~]{1,70}", fullmatch=True))
int32 = st.integers(-(2**31), 2**31 - 1)
enum_numbers = st.one_of(st.integers(0, 5), int32)


@st.composite
def browser_infos(draw: st.DrawFn) -> pb.BrowserInfo:
    info = pb.BrowserInfo(accept_header=draw(texts), language=draw(texts), user_agent=draw(texts))
    for name in ("java_enabled", "java_script_enabled"):
        flag = draw(st.none() | st.booleans())
        if flag is not None:
            setattr(info, name, flag)
    return info


@st.composite
def envs(draw: st.DrawFn) -> pb.Env:
    env = pb.Env(
        terminal_type=pb.TerminalType.ValueType(draw(enum_numbers)),
        os_type=pb.OsType.ValueType(draw(enum_numbers)),
        screen_width=draw(int32),
        screen_height=draw(int32),
        color_depth=draw(st.one_of(st.sampled_from([0, 1, 24, 48]), int32)),
    )
    for name in ("user_agent", "device_token_id", "cookie_id", "device_language"):
        setattr(env, name, draw(texts))
    for name in ("device_brand", "device_model", "device_id", "os_version"):
        setattr(env, name, draw(texts))
    env.client_ip = draw(st.one_of(texts, st.ip_addresses().map(str)))
    offset = draw(st.none() | st.integers(-1000, 1000) | int32)
    if offset is not None:
        env.time_zone_offset = offset
    if draw(st.booleans()):
        env.browser_info.CopyFrom(draw(browser_infos()))
    return env


@st.composite
def create_requests(draw: st.DrawFn) -> pb.CreateSessionRequest:
    request = pb.CreateSessionRequest(
        vaulting_request_id=draw(ids),
        payment_method_type=draw(st.one_of(st.sampled_from(["", "CARD"]), texts)),
        redirect_url=draw(
            st.one_of(
                st.just(""),
                st.from_regex(r"https?://[a-z]{1,10}(\.[a-z]{2,5})?(/[!-~]*)?", fullmatch=True),
                texts,
            )
        ),
        merchant_region=draw(
            st.one_of(st.just(""), st.from_regex(r"[A-Z]{2}", fullmatch=True), texts)
        ),
        labels=draw(st.dictionaries(texts, texts, max_size=20)),
    )
    flag = draw(st.none() | st.booleans())
    if flag is not None:
        request.is_3ds_authentication = flag
    if draw(st.booleans()):
        request.env.CopyFrom(draw(envs()))
    return request


@given(create_requests())
def test_any_create_request_is_either_mapped_or_refused_with_known_fields(
    request: pb.CreateSessionRequest,
) -> None:
    """Whatever a client sends, validation then mapping ends in parameters or in
    InvalidArgumentError naming real proto fields; never in any other exception."""
    violations = validation.create_session_violations(request)
    if violations:
        assert set(violations) <= KNOWN_PATHS
        with pytest.raises(InvalidArgumentError):
            validation.ensure_valid(violations)
        return
    validation.ensure_valid(violations)
    vaulting_request_id, parameters = mapping.session_request(request)
    assert vaulting_request_id == request.vaulting_request_id
    assert parameters.payment_method_type == "CARD"
    assert list(parameters.labels) == sorted(request.labels.items())
    assert list(parameters.env) == sorted(parameters.env)


def _string_field_paths(
    descriptor: Descriptor, prefix: str = ""
) -> Iterator[tuple[str, Callable[[Message, str], None]]]:
    """(violation path, how to put a text there) for every string in a message type, nested
    messages, repeated strings and both sides of string maps included."""
    for field in descriptor.fields:
        path = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            yield (
                path,
                lambda message, text, name=field.name: getattr(message, name).update({text: "v"}),
            )
            yield (
                path,
                lambda message, text, name=field.name: getattr(message, name).update({"k": text}),
            )
        elif field.message_type is not None:
            for inner_path, put in _string_field_paths(field.message_type, path + "."):
                yield (
                    inner_path,
                    lambda message, text, name=field.name, put=put: put(
                        getattr(message, name), text
                    ),
                )
        elif field.type == FieldDescriptor.TYPE_STRING and field.is_repeated:
            yield (
                f"{path}[1]",
                lambda message, text, name=field.name: getattr(message, name).extend(["ok", text]),
            )
        elif field.type == FieldDescriptor.TYPE_STRING:
            yield path, lambda message, text, name=field.name: setattr(message, name, text)


REQUEST_TYPES = [
    method.input_type for method in pb.DESCRIPTOR.services_by_name["VaultService"].methods
]
STRING_FIELDS = [
    pytest.param(request_type, path, put, id=f"{request_type.name}.{path}#{n}")
    for request_type in REQUEST_TYPES
    for n, (path, put) in enumerate(_string_field_paths(request_type))
]


def test_every_request_message_has_a_check() -> None:
    """A new RPC's request cannot slip past the control-character rule unchecked."""
    assert {t.full_name for t in REQUEST_TYPES} == {
        t.DESCRIPTOR.full_name for t in validation.REQUEST_VIOLATIONS
    }
    assert STRING_FIELDS


@pytest.mark.parametrize(
    "text", ["https://x.example/\r\nSet-Cookie: a=b", "a\nb", "\x00", "\x7f", "\x1b[31m", "\x85"]
)
@pytest.mark.parametrize(("request_type", "path", "put"), STRING_FIELDS)
def test_control_characters_are_refused_in_every_string_field(
    request_type: Descriptor, path: str, put: Callable[[Message, str], None], text: str
) -> None:
    """Regression (issue 9 #16): CR/LF in redirect_url was accepted, stored and sent to Antom
    raw (urlsplit strips them only while checking), and only NUL was refused, only in
    CreateSession. Every string of every request message, found from the descriptors so that
    a future field is covered, now refuses C0, DEL and C1 with a violation naming the field."""
    request_class = message_factory.GetMessageClass(request_type)
    request = request_class()
    put(request, text)
    violations = validation.REQUEST_VIOLATIONS[request_class](request)
    assert validation.CONTROL_CHARACTER_RULE in violations.get(path, ""), violations
