"""One set of broker-URL and TLS-option rules (and one TLS context) for the node, the centre CLI, the bench
meter, the doctor and the enrolment client."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from agent.config import build_config
from agent.errors import ConfigError, EdgecamError
from agent.transport.mqtt_url import MqttOptionError, check_tls_files, parse_mqtt_url, tls_context
from centre.mqtt import MqttOptions


def test_parse_default_ports_credentials_and_ipv6() -> None:
    assert parse_mqtt_url("mqtt://10.0.0.1").port == 1883
    a = parse_mqtt_url("mqtts://u%40x:p@broker.example:9000")
    assert (a.host, a.port, a.tls, a.username, a.password) == ("broker.example", 9000, True, "u@x", "p")
    assert a.url == "mqtts://broker.example:9000"  # no credentials in what gets logged
    assert parse_mqtt_url("mqtts://[::1]").url == "mqtts://[::1]:8883"


@pytest.mark.parametrize("bad", ["http://x", "mqtt://", "mqtt://h:notaport", "broker:1883"])
def test_bad_urls_name_the_option_each_caller_uses(bad: str) -> None:
    with pytest.raises(MqttOptionError, match=r"^--mqtt: ") as exc:
        parse_mqtt_url(bad, "--mqtt")
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"^config: mqtt\.url: "):
        build_config({"mqtt": {"url": bad}})
    with pytest.raises(EdgecamError, match=r"^--mqtt: "):
        MqttOptions.from_cli(bad)


def test_tls_rules_are_the_same_for_the_node_and_the_centre(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("not checked here")
    cases = [  # (url, ca, cert, key) → option the error names (None: accepted)
        ("mqtts://h", pem, pem, pem, None),
        ("mqtts://h", pem, None, None, None),
        ("mqtts://h", None, pem, None, "cert"),
        ("mqtts://h", None, None, pem, "key"),
        ("mqtt://h", pem, None, None, "ca"),
        ("mqtt://h", None, pem, pem, "cert"),
    ]
    for url, ca, cert, key, bad in cases:
        given = {k: str(v) for k, v in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)) if v}
        if bad is None:
            build_config({"mqtt": {"url": url, **given}})
            MqttOptions.from_cli(url, ca, cert, key)
            continue
        with pytest.raises(ConfigError, match=rf"^config: mqtt\.tls_{bad}: "):
            build_config({"mqtt": {"url": url, **given}})
        with pytest.raises(EdgecamError, match=rf"^--tls-{bad}: "):
            MqttOptions.from_cli(url, ca, cert, key)


def test_tools_check_that_the_files_exist(tmp_path: Path) -> None:
    with pytest.raises(MqttOptionError, match=r"^--tls-ca: .*nope\.pem: file not found"):
        check_tls_files(True, tmp_path / "nope.pem", None, None, ("--tls-ca", "--tls-cert", "--tls-key"),
                        must_exist=True)
    check_tls_files(True, tmp_path / "nope.pem", None, None)  # the node checks when it connects


def test_one_tls_context_for_every_client_and_unloadable_files_name_their_option(tmp_path: Path) -> None:
    """The node's link, its doctor, the centre's tools and the enrolment client build their TLS context with
    ``agent.transport.mqtt_url.tls_context``: the broker verified with hostname checks, and a file that does not
    load is one line naming the option as each caller spells it."""
    from agent.doctor.broker import ProbeFailed, _tls_context
    from agent.doctor.identity import IdentityFiles
    from agent.transport.mqtt_client import tls_context as node_tls_context
    from centre.mqtt import make_client
    from provisioning.enrol_client import EnrolFailed, Login, _client

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    ctx = tls_context(None, None, None)
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(MqttOptionError, match=r"^--tls-ca: cannot load .*junk\.pem"):
        tls_context(junk, None, None, ("--tls-ca", "--tls-cert", "--tls-key"))
    with pytest.raises(MqttOptionError, match=r"^mqtt\.tls_cert: cannot load .*junk\.pem"):
        tls_context(None, junk, junk)
    node_cfg = build_config({"mqtt": {"url": "mqtts://h", "tls_ca": str(junk)}}).mqtt
    with pytest.raises(ConfigError, match=r"^mqtt\.tls_ca: cannot load .*junk\.pem"):
        node_tls_context(node_cfg)
    with pytest.raises(ProbeFailed, match=r"^TLS error: cannot load .*junk\.pem"):
        _tls_context(IdentityFiles(junk, None, None, "test"))
    with pytest.raises(EdgecamError, match=r"^--tls-cert: cannot load .*junk\.pem"):
        make_client(MqttOptions.from_cli("mqtts://h", None, junk, junk))
    with pytest.raises(EnrolFailed, match=r"^CA certificate: cannot load .*junk\.pem"):
        _client(Login("mqtts://h:1", junk))
