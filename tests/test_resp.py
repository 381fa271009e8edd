"""RESP2 codec: round trips, every malformed case, incomplete versus invalid."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.harness import resp

printable = st.text(alphabet=st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=20)
values = st.recursive(
    st.one_of(
        printable.map(resp.simple),
        printable.map(resp.error),
        st.integers(-(2**63), 2**63 - 1).map(resp.integer),
        st.one_of(st.none(), st.text(max_size=30)).map(resp.bulk),
        st.just(resp.array(None)),
    ),
    lambda children: st.lists(children, max_size=4).map(resp.array),
    max_leaves=12,
)


@given(values)
def test_round_trip(value: resp.Value) -> None:
    encoded = resp.encode(value)
    assert resp.decode_exactly_one(encoded) == value


@given(values)
def test_every_strict_prefix_is_incomplete_not_invalid(value: resp.Value) -> None:
    encoded = resp.encode(value)
    for cut in range(len(encoded)):
        with pytest.raises(resp.IncompleteRESP):
            resp.decode(encoded[:cut])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"+PONG\r\n", resp.simple("PONG")),
        (b"-ERR unknown\r\n", resp.error("ERR unknown")),
        (b":42\r\n", resp.integer(42)),
        (b":-7\r\n", resp.integer(-7)),
        (b"$4\r\nPONG\r\n", resp.bulk("PONG")),
        (b"$0\r\n\r\n", resp.bulk("")),
        (b"$-1\r\n", resp.bulk(None)),
        (b"*-1\r\n", resp.array(None)),
        (b"*0\r\n", resp.array([])),
        (b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", resp.array([resp.bulk("GET"), resp.bulk("k")])),
        (b"$4\r\na\r\nb\r\n", resp.bulk("a\r\nb")),  # bulk strings are binary-safe
    ],
)
def test_decodes_known_values(data: bytes, expected: resp.Value) -> None:
    assert resp.decode_exactly_one(data) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "Expected start of a new RESP2 value (either +, -, :, $ or *)"),
        (b"+PONG", "Expected \\r\\n at the end of a simple string"),
        (b"+PONG\r", "Expected \\r\\n at the end of a simple string"),
        (b"$4\r\nPO", "Expected 4 bytes in bulk string, got 2"),
        (b"$4\r\nPONG", "Expected \\r\\n at the end of a bulk string"),
        (b"$4", "Expected \\r\\n at the end of a bulk string length"),
        (b"*2\r\n$1\r\na\r\n", "Expected start of a new RESP2 value (either +, -, :, $ or *)"),
        (b":12", "Expected \\r\\n at the end of an integer"),
    ],
)
def test_incomplete_inputs(data: bytes, message: str) -> None:
    with pytest.raises(resp.IncompleteRESP) as caught:
        resp.decode(data)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"K", '"K" is not a valid start of a RESP2 value (expected +, -, :, $ or *)'),
        (b"PONG\r\n", '"P" is not a valid start of a RESP2 value (expected +, -, :, $ or *)'),
        (b"$x\r\n", 'Invalid bulk string length: "x"'),
        (b"$-2\r\n", 'Invalid bulk string length: "-2"'),
        (b"$4\r\nPONGxx", "Expected \\r\\n at the end of a bulk string"),
        (b":abc\r\n", 'Invalid integer: "abc"'),
        (b"*x\r\n", 'Invalid array length: "x"'),
        # Strict like Go's strconv.Atoi: no spaces, no digit separators.
        (b":1_0\r\n", 'Invalid integer: "1_0"'),
        (b": 12 \r\n", 'Invalid integer: " 12 "'),
        (b"$ 3\r\nabc\r\n", 'Invalid bulk string length: " 3"'),
        (b"*1_0\r\n", 'Invalid array length: "1_0"'),
        (b"+PONG\r\n+PONG\r\n", 'Found extra data: "+PONG\\r\\n"'),
    ],
)
def test_invalid_inputs(data: bytes, message: str) -> None:
    with pytest.raises(resp.InvalidRESP) as caught:
        resp.decode_exactly_one(data)
    assert caught.value.message == message


def test_empty_reply_renders_the_testers_block() -> None:
    with pytest.raises(resp.IncompleteRESP) as caught:
        resp.decode_exactly_one(b"")
    assert resp.render_decode_error(b"", caught.value) == [
        'Received: "" (no content received)',
        "           ^ error",
        "Error: Expected start of a new RESP2 value (either +, -, :, $ or *)",
    ]


def test_caret_points_at_the_offending_byte() -> None:
    data = b"+PONG\r\n+PONG\r\n"
    with pytest.raises(resp.InvalidRESP) as caught:
        resp.decode_exactly_one(data)
    received, caret, _ = resp.render_decode_error(data, caught.value)
    # The caret sits under the second '+', the first byte of the extra data.
    assert received[caret.index("^")] == "+"
    assert received.index("+PONG", 12) == caret.index("^")


def test_encoder_refuses_crlf_in_simple_strings() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        resp.encode(resp.simple("a\r\nb"))


def test_mismatch_wording_names_type_and_value() -> None:
    assert resp.simple("PONG").describe() == 'simple string "PONG"'
    assert resp.bulk("PONG").describe() == 'bulk string "PONG"'
    assert resp.bulk(None).describe() == "null bulk string"


def test_command_is_an_array_of_bulk_strings() -> None:
    assert resp.command("PING") == b"*1\r\n$4\r\nPING\r\n"
