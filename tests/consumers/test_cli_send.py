"""`lorastream send`'s input: prompt argument or file, escapes, --chat with --system, defaults from one place."""

from __future__ import annotations

import io

import pytest

from cli.commands import send_input, unescape
from cli.main import build_parser, main
from schemas import SamplingParams


def parse(*argv: str):
    return build_parser().parse_args(["send", *argv])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"a\nb", "a\nb"),
        (r"a\tb\r", "a\tb\r"),
        (r"a\\nb", "a\\nb"),  # an escaped backslash, then a plain n
        (r"C:\path\x", r"C:\path\x"),  # unknown escapes stay as they are
        ("é\\n→", "é\n→"),  # non-ASCII untouched
        ("trailing\\", "trailing\\"),
    ],
)
def test_unescape(text, expected):
    assert unescape(text) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((r"a\nb",), (r"a\nb", None)),
        ((r"a\nb", "--escapes"), ("a\nb", None)),
        (("hi", "--chat"), (None, [{"role": "user", "content": "hi"}])),
        (
            (r"hi\n", "--chat", "--system", r"be\nbrief", "--escapes"),
            (None, [{"role": "system", "content": r"be\nbrief"}, {"role": "user", "content": "hi\n"}]),
        ),
    ],
)
def test_send_input_from_the_argument(argv, expected):
    assert send_input(parse(*argv)) == expected


def test_send_input_from_a_file_and_from_stdin(tmp_path, monkeypatch):
    path = tmp_path / "prompt.txt"
    path.write_text("line one\\n\nline two é\n", encoding="utf-8")
    assert send_input(parse("--prompt-file", str(path))) == ("line one\\n\nline two é\n", None)
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    assert send_input(parse("--prompt-file", "-", "--chat")) == (None, [{"role": "user", "content": "from stdin\n"}])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "one of them"),
        (("hi", "--prompt-file", "x.txt"), "one of them"),
        (("--prompt-file", "x.txt", "--escapes"), "--escapes"),
        (("hi", "--system", "s"), "--system needs --chat"),
    ],
)
def test_send_input_refusals(argv, message):
    with pytest.raises(ValueError, match=message):
        send_input(parse(*argv))


def test_send_refuses_bad_input_before_connecting(capsys):
    assert main(["send", "hi", "--system", "s", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "--system needs --chat" in capsys.readouterr().out


def test_send_defaults_come_from_the_wire_format_and_the_client():
    args = parse("hi")
    assert args.max_new_tokens == SamplingParams().max_new_tokens
    assert (args.temperature, args.top_p, args.top_k) == (0.0, 1.0, 0)
    assert args.timeout_s is None  # the client's request_timeout_s applies
    assert parse("hi", "--ignore-eos").ignore_eos and not args.ignore_eos
