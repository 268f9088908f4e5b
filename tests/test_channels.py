"""The channel table and what is generated from it agree: broker ACL, AsyncAPI document, the centre's and the
node's subscriptions, ``Topics``. Each artefact is built by its real generator and read back as text/JSON,
then compared with the others (what the broker makes of the ACL is tested in test_acl.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.contract import CENTRE, CHANNELS, CLAIM, NODE, RESERVED_NODE_IDS, Topics, match_topic
from agent.contract.channels import non_node_levels
from agent.contract_docs import render
from centre.enrol import REQUESTS as ENROL_WORKER_READS
from centre.receiver import Receiver, subscriptions
from centre.store import Store
from provisioning.broker_config import acl_text, enrol_acl_text, loopback_acl_text

CENTRES = ["centre", "centre-2"]


def _asyncapi() -> dict:
    return json.loads(render()["asyncapi.json"])


def _acl() -> tuple[set[tuple[str, str]], dict[str, set[tuple[str, str]]]]:
    """(pattern grants, user → topic grants) as (access, topic) pairs, read back from the generated file."""
    patterns: set[tuple[str, str]] = set()
    users: dict[str, set[tuple[str, str]]] = {}
    user = None
    for line in acl_text(CENTRES).splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
            users[user] = set()
        elif words[0] == "pattern":
            assert user is None, "pattern lines come before the user blocks"
            patterns.add((words[1], words[2]))
        else:
            assert words[0] == "topic" and user is not None, line
            users[user].add((words[1], words[2]))
    return patterns, users


def _claim_acl() -> set[tuple[str, str]]:
    """The enrolment listener's grants, (access, topic) pairs: pattern lines only."""
    lines = [line.split() for line in enrol_acl_text().splitlines() if line and not line.startswith("#")]
    assert all(words[0] == "pattern" for words in lines)
    return {(words[1], words[2]) for words in lines}


def _fill(address: str, **values: str) -> str:
    """An AsyncAPI address with the given parameters filled in and every other one ``+``."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "+"), address)


def test_acl_grants_exactly_what_the_asyncapi_document_publishes() -> None:
    """For each AsyncAPI channel, the identities the ACL lets write/read it are its x-edgecam lists; the ACL
    grants nothing that is not an AsyncAPI channel (a channel taken out of the table is not granted). Claim
    identities get their rights only from the enrolment listener's ACL."""
    patterns, users = _acl()
    claims = _claim_acl()
    assert set(users) == set(CENTRES) and len({frozenset(g) for g in users.values()}) == 1
    centre = users["centre"]
    covered: set[tuple[str, str]] = set()
    for ch in _asyncapi()["channels"].values():
        node_form, centre_form = _fill(ch["address"], node_id="%u"), _fill(ch["address"])
        claim_form = _fill(ch["address"], claim_id="%u")
        for access, listed in (("write", ch["x-edgecam-publishers"]), ("read", ch["x-edgecam-subscribers"])):
            granted = {NODE} if (access, node_form) in patterns else set()
            granted |= {CENTRE} if (access, centre_form) in centre else set()
            granted |= {CLAIM} if (access, claim_form) in claims else set()
            assert granted == set(listed), (ch["address"], access)
            covered |= {(access, node_form), (access, centre_form), (access, claim_form)}
        if CENTRE in ch["x-edgecam-subscribers"]:  # receivers may split it with a shared subscription
            assert ("read", f"$share/+/{centre_form}") in centre
            covered.add(("read", f"$share/+/{centre_form}"))
    assert patterns <= covered and centre <= covered and claims <= covered
    assert not [t for _a, t in patterns if "/enrol/" in t]  # the mTLS listener grants no claim topic


def test_loopback_acl_reads_every_channel_without_secrets_and_writes_nothing() -> None:
    lines = [line for line in loopback_acl_text().splitlines() if line and not line.startswith("#")]
    assert all(line.startswith("topic read ") for line in lines)
    reads = {line.split()[2] for line in lines}
    secret = {ch.address for ch in CHANNELS if ch.holds_secrets}
    assert {a for a in secret if a.endswith("/config/desired")}, "config documents can carry credentials"
    addresses = {_fill(a) for a in (ch["address"] for ch in _asyncapi()["channels"].values()) if a not in secret}
    assert reads == addresses | {f"$share/+/{a}" for a in addresses} | {"$SYS/#"}


def test_asyncapi_channels_are_the_table_rows() -> None:
    doc = _asyncapi()
    assert sorted(ch["address"] for ch in doc["channels"].values()) == sorted(ch.address for ch in CHANNELS)
    by_address = {ch.address: ch for ch in CHANNELS}
    for op in doc["operations"].values():
        ch_id = op["channel"]["$ref"].rsplit("/", 1)[1]
        row = by_address[doc["channels"][ch_id]["address"]]
        assert op["action"] == ("send" if row.publishers & {NODE, CLAIM} else "receive")  # a claim: a node to be
        assert (op["bindings"]["mqtt"]["qos"], op["bindings"]["mqtt"]["retain"]) == (row.qos, row.retain)
    assert len(doc["operations"]) == len(CHANNELS)
    messages = doc["components"]["messages"]
    assert {"OtaJob", "OtaStatus", "ReleaseAnnouncement"} <= set(messages)


def test_centre_subscribes_to_exactly_what_nodes_send_it() -> None:
    """Every channel a node publishes and the centre may read, nothing else; heavy streams shared."""
    doc, (_patterns, users) = _asyncapi(), _acl()
    worker = {ch.address for ch in ENROL_WORKER_READS}  # renewal CSRs go to the enrolment worker, not here
    from_nodes = {_fill(ch["address"]) for ch in doc["channels"].values()
                  if NODE in ch["x-edgecam-publishers"] and CENTRE in ch["x-edgecam-subscribers"]
                  and ch["address"] not in worker}
    for group in ("g", ""):
        subs = subscriptions(group)
        plain = {re.sub(r"^\$share/g/", "", f) for f, _qos in subs}
        assert plain == from_nodes and len(subs) == len(from_nodes)
        for f, _qos in subs:
            assert ("read", re.sub(r"^\$share/g/", "$share/+/", f)) in users["centre"], f
        shared = {f for f, _ in subs if f.startswith("$share/")}
        assert shared == ({"$share/g/edgecam/v1/+/events", "$share/g/edgecam/v1/+/thumbs/+"} if group else set())
    qos = {_fill(ch.address): ch.qos for ch in CHANNELS}
    assert all(q == qos[re.sub(r"^\$share/g/", "", f)] for f, q in subscriptions("g"))


def test_node_subscribes_to_exactly_the_centre_to_node_channels() -> None:
    doc, (patterns, _users) = _asyncapi(), _acl()
    to_nodes = {_fill(ch["address"], node_id="node-a") for ch in doc["channels"].values()
                if CENTRE in ch["x-edgecam-publishers"] and NODE in ch["x-edgecam-subscribers"]}
    subs = Topics("node-a").subscriptions()
    assert {f for f, _ in subs} == to_nodes == {"edgecam/v1/node-a/cmd/req", "edgecam/v1/node-a/config/desired",
                                                "edgecam/v1/centre/state", "edgecam/v1/node-a/cert/res",
                                                "edgecam/v1/node-a/ota/job", "edgecam/v1/fleet/releases/+"}
    assert {f for f, _ in subs} == {t.replace("%u", "node-a") for a, t in patterns if a == "read"}


def test_topics_are_the_table_addresses() -> None:
    t = Topics("cam-7")
    assert (t.state, t.events, t.cmd_req, t.config_desired) == (
        "edgecam/v1/cam-7/state", "edgecam/v1/cam-7/events", "edgecam/v1/cam-7/cmd/req",
        "edgecam/v1/cam-7/config/desired")
    assert t.thumbs("e-1") == "edgecam/v1/cam-7/thumbs/e-1" and Topics.centre_state == "edgecam/v1/centre/state"
    assert (t.ota_job, t.ota_status, Topics.fleet_releases("beta")) == (
        "edgecam/v1/cam-7/ota/job", "edgecam/v1/cam-7/ota/status", "edgecam/v1/fleet/releases/beta")
    with pytest.raises(ValueError, match="event_id"):
        t.thumbs("a/b")
    for ch in CHANNELS:
        instance = ch.topic(**{p: "x1" for p in ch.params})
        assert match_topic(instance) == (ch, {p: "x1" for p in ch.params})


def test_reserved_node_ids_cover_every_non_node_level() -> None:
    assert non_node_levels() == {"centre", "enrol", "fleet"} <= RESERVED_NODE_IDS
    assert sorted(RESERVED_NODE_IDS) == ["centre", "enrol", "fleet"]
    assert match_topic("edgecam/v1/centre/state")[0].key == "centre_state"  # not node "centre"'s state


def test_receiver_consumes_every_channel_it_subscribes_to(tmp_path: Path) -> None:
    """A valid message on each subscribed channel is stored; centre/state (which `+/state` also brings) is
    ignored; node topics under a reserved or malformed id, or of a channel not in the table, are invalid."""
    from tests.test_centre import jpeg, make_event

    thumb = jpeg(1)
    ev = make_event("cam-1", 1, 1, thumb=thumb)
    samples = {
        "events": ev.model_dump_json().encode(),
        "thumbs": thumb,
        "state": b'{"online": true, "bd_seq": 1}',
        "health": b'{"ts": "2026-01-01T00:00:00Z", "uptime_s": 1, "fps": 2, "clock_synced": true}',
        "cmd_res": b'{"cmd_id": "c1", "status": "ok"}',
        "config_reported": b'{"version": 1, "status": "applied"}',
        "ota_status": b'{"release": 2, "state": "refused", "error": "wrong device type"}',
    }
    by_filter = {ch.filter(): ch for ch in CHANNELS}
    with Store(tmp_path / "store", receiver="r1") as store:
        rx = Receiver(store)
        for f, _qos in subscriptions("g"):
            ch = by_filter[re.sub(r"^\$share/g/", "", f)]
            rx.handle(ch.topic(node_id="cam-1", event_id=ev.event_id, channel="stable"), samples.pop(ch.key))
        assert samples == {} and rx.stats.invalid == 0
        assert (rx.stats.events, rx.stats.thumbnails, rx.stats.status) == (1, 1, 5)
        rx.handle("edgecam/v1/centre/state", b'{"online": true}')
        assert rx.stats.invalid == 0 and rx.stats.status == 5
        for topic in ("edgecam/v1/fleet/state", "edgecam/v1/enrol/health", "edgecam/v1/-x/state",
                      "edgecam/v1/cam-1/ota/bogus"):
            rx.handle(topic, b'{"online": true, "bd_seq": 1}')
        assert rx.stats.invalid == 4 and rx.stats.status == 5
