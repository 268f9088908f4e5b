"""The centre's side of OTA releases: announce a channel's newest release on MQTT, and read what nodes report.

Here, not in ``provisioning/release/``, because only the centre writes ``fleet/releases`` and reads the store;
the commands are ``edgecam release announce`` and ``edgecam release status`` (mounted by ``centre.cli``).

``announce`` publishes the retained ``edgecam/v1/fleet/releases/{channel}`` with the centre's identity (only the
centre may write it: the ACL comes from the channel table). It is a hint: nodes check right away instead of at
their next timer, and trust only what TUF verifies. ``fleet_status`` reads the centre store's latest
``ota/status`` and ``state`` of every node (``edgecam release status --store``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from agent.contract import ReleaseAnnouncement, Topics, utc_now
from agent.errors import EdgecamError
from centre.mqtt import MqttOptions, connect_blocking, make_client
from centre.store import open_existing
from provisioning.release.repo import ReleaseRepo


def announcement(repo: ReleaseRepo, channel: str) -> ReleaseAnnouncement:
    rel, ro = repo.current_release(channel), repo.current_rollout(channel)
    if rel is None:
        raise EdgecamError(f"channel {channel!r}: no release in {repo.dir} (run `edgecam release add`)")
    percent = ro.percent if ro is not None and ro.release == rel.release else 0
    return ReleaseAnnouncement(channel=channel, release=rel.release, percent=percent, ts=utc_now(),
                               timestamp_version=repo.md["timestamp"].signed.version)


def announce(repo: ReleaseRepo, channel: str, opts: MqttOptions, timeout: float = 10.0) -> ReleaseAnnouncement:
    """Publish the channel's announcement, retained, QoS 1; waits for the broker's PUBACK."""
    msg = announcement(repo, channel)
    client = make_client(opts)
    connect_blocking(client, opts, timeout)
    try:
        info = client.publish(Topics.fleet_releases(channel), msg.model_dump_json(exclude_none=True).encode(), qos=1,
                              retain=True)
        client.loop_start()
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise EdgecamError(f"{opts.url}: announcement not acknowledged within {timeout:g}s")
    finally:
        client.disconnect()
        client.loop_stop()
    return msg


def fleet_status(store_root: Path) -> dict[str, Any]:
    """Per node: the last ``ota/status`` and the versions in its ``state``; totals by state and running release."""
    with open_existing(store_root) as store:
        ota, states = store.statuses("ota/status"), store.statuses("state")
    nodes: dict[str, Any] = {}
    for node in sorted(set(ota) | set(states)):
        status, at = ota.get(node, (None, None))
        state = states.get(node, ({}, None))[0]
        nodes[node] = {"ota": status, "ota_received_at": at, "online": state.get("online"),
                       "versions": state.get("versions")}
    return {
        "nodes": nodes,
        "by_state": dict(Counter(n["ota"]["state"] for n in nodes.values() if n["ota"])),
        "by_running_release": dict(Counter(str((n["versions"] or {}).get("release")) for n in nodes.values()
                                           if n["versions"])),
    }
