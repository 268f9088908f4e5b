"""The one redaction rule (agent/redact.py): URLs, free text, the ``SecretUrl`` config type and log records."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import AgentConfig, build_config
from agent.redact import REVEAL, SecretUrl, redact_text, redact_url
from agent.service import redact_record


@pytest.mark.parametrize(("url", "shown"), [
    ("rtsp://admin:hunter2@10.0.0.5:554/Streaming/101", "rtsp://***@10.0.0.5:554/Streaming/101"),
    ("rtsp://admin:p@ss@word@cam.local/live", "rtsp://***@cam.local/live"),  # raw '@': host after the last one
    ("rtsp://admin:p%40ss@cam.local/live", "rtsp://***@cam.local/live"),
    ("rtsp://admin:pa/ss@cam.local/live", "rtsp://***@cam.local/live"),  # '/' in the password: over-redact
    ("mqtt://node-1@broker:1883", "mqtt://***@broker:1883"),  # a user alone is hidden too
    ("rtsp://cam.local:554/live", "rtsp://cam.local:554/live"),  # nothing to hide
    ("mqtts://[::1]:8883", "mqtts://[::1]:8883"),
    ("rtsp://u:p@ss@[fe80::1%25eth0]:554/s", "rtsp://***@[fe80::1%25eth0]:554/s"),
    ("rtsp://u:pw@cam/s?channel=1&subtype=0", "rtsp://***@cam/s?channel=1&subtype=0"),
    ("rtsp://u:pw@cam/s?note=a@b", "rtsp://***@cam/s?note=a@b"),  # an '@' after the host is not the host's
    ("rtsp://cam/s?user=admin&password=x1&channel=1", "rtsp://cam/s?user=admin&password=***&channel=1"),
    ("rtsp://cam:554/user=admin&password=x1&channel=1&stream=0.sdp",  # XMEye-style path parameters
     "rtsp://cam:554/user=admin&password=***&channel=1&stream=0.sdp"),
    ("http://cam/snap.jpg?token=abc&pwd=z", "http://cam/snap.jpg?token=***&pwd=***"),
    ("/dev/video0", "/dev/video0"),
    ("not a url", "not a url"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


@given(password=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"), min_size=1),
       user=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#@"), max_size=10))
def test_no_password_survives_however_it_is_typed(password, user):
    """Any password without '/', '?' or '#' (which end the authority), '@' and ':' included, hides whole."""
    assert redact_url(f"rtsp://{user}:{password}@cam.example:554/live?ch=1") == "rtsp://***@cam.example:554/live?ch=1"


def test_redact_text_finds_every_url_in_a_line():
    line = "mqtt.url: 'mqtt://n:s3cret@h:xx': bad port; also rtsp://a:b@c@cam/x, done"
    assert redact_text(line) == "mqtt.url: 'mqtt://***@h:xx': bad port; also rtsp://***@cam/x, done"
    assert redact_text("no url here") == "no url here"


def test_secret_url_renders_redacted_everywhere_but_reveal():
    raw = "rtsp://op:p@ss@cam:554/live"
    cfg = build_config({"source": {"kind": "rtsp", "url": raw}, "mqtt": {"url": "mqtt://n:pw@broker:1883"}})
    url = cfg.source.url
    assert url.reveal() == raw and cfg.mqtt.url.reveal() == "mqtt://n:pw@broker:1883"
    logged = "%s" % url  # noqa: UP031 - the rendering logging uses
    for shown in (str(url), f"{url}", logged, repr(url), repr(cfg), cfg.model_dump_json(),
                  json.dumps(cfg.model_dump(mode="json")), str(cfg.model_dump())):
        assert "p@ss" not in shown and ":pw@" not in shown and "***@" in shown, shown
    with pytest.raises(TypeError):
        json.dumps(url)  # a forgotten reveal() fails loudly, it does not leak
    revealed = cfg.model_dump(mode="json", context=REVEAL)  # the config owner's layering, nobody else
    assert revealed["source"]["url"] == raw and AgentConfig.model_validate(revealed) == cfg
    assert SecretUrl(raw) == url and SecretUrl(raw) != SecretUrl(raw + "2") and hash(SecretUrl(raw)) == hash(url)


def test_log_records_and_tracebacks_are_redacted():
    try:
        raise ValueError("cannot open rtsp://op:hunter2@cam/live")
    except ValueError:
        record = logging.LogRecord("edgecam", logging.ERROR, __file__, 1, "source %s failed", ("mqtt://n:pw@b",),
                                   sys.exc_info())
    assert redact_record(record)
    text = logging.Formatter().format(record)
    assert "source mqtt://***@b failed" in text and "rtsp://***@cam/live" in text
    assert "hunter2" not in text and ":pw@" not in text
