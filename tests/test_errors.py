"""The one way an exception becomes a line for users: first non-empty line, secrets hidden, never IndexError."""

from __future__ import annotations

from streamseg.errors import describe, redact, short_message


def test_short_message_takes_the_first_line_and_is_safe_on_an_empty_message():
    assert short_message(ValueError("first\nsecond")) == "first"
    assert short_message(ValueError("\n\n  real reason  \nmore")) == "real reason"
    assert short_message(ValueError("")) == "ValueError"
    assert short_message(OSError()) == "OSError"
    assert short_message(ValueError("x" * 500), 20) == "x" * 20


def test_short_message_hides_passwords_and_tokens():
    exc = OSError("cannot open rtsp://admin:hunter2@cam/s?token=abc&x=1")
    assert short_message(exc) == "cannot open rtsp://admin:***@cam/s?token=***&x=1"
    assert redact("http://u:p@h/?api_key=k") == "http://u:***@h/?api_key=***"
    assert redact("cannot publish to rtmp://live.example:1935/app/sk_live_123 (x)") == \
        "cannot publish to rtmp://live.example:1935/app/*** (x)"
    assert redact("rtmps://u:p@h/live/key?x=1") == "rtmps://u:***@h/live/***?x=1"
    assert redact("rtmp://h/app") == "rtmp://h/app" and redact("http://h/app/file.mp4") == "http://h/app/file.mp4"


def test_describe_names_the_type_once():
    assert describe(KeyError()) == "KeyError"
    assert describe(RuntimeError("boom\nstack")) == "RuntimeError: boom"
