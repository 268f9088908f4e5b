"""The node's update check (issue 14, node side) against a real repository on a real HTTP(S) server.

Each refusal ends with nothing installed and a status that says why; the happy path fetches over mTLS with
the node's own certificate. Only the disk-size probe is injected (this machine's disk cannot be made small).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.ota.check import Checker, NodeFacts, Refused
from agent.ota.fetcher import NodeFetcher, TlsFiles
from agent.ota.manifest import TargetPaths
from agent.ota.paths import OtaPaths
from agent.ota.rollout import bucket, in_rollout
from agent.ota.state import OtaState, StatusFile
from provisioning.release.bundle import pack_agent
from provisioning.release.repo import Expiry, ReleaseRepo
from tests.ota_helpers import ServedRepo, add_full_release, agent_bundle, make_repo


def checker(state_dir: Path, url: str, repo: ReleaseRepo, *, node_id: str = "n1", device_type: str = "rpi4",
            tls: TlsFiles | None = None, synced: bool = True, free=None, channel: str = "stable") -> Checker:
    paths = OtaPaths(state_dir).make()
    if not paths.bootstrap_root.exists():
        shutil.copy(repo.meta_dir / "1.root.json", paths.bootstrap_root)  # what provisioning installs
    facts = NodeFacts(node_id=node_id, device_type=device_type, agent_version="0.1.0", channel=channel,
                      repo_url=url, root=paths.bootstrap_root, reserve_bytes=1024)
    kwargs = {"free": free} if free else {}
    return Checker(facts, paths, NodeFetcher(tls), StatusFile(paths.status), lambda: synced, **kwargs)


def refused(ch: Checker) -> Refused:
    with pytest.raises(Refused) as info:
        ch.run()
    ch.status(info.value.state, info.value.release, info.value.reason)  # what `edgecam ota check` reports
    assert StatusFile.read(ch.paths.status).state == info.value.state
    assert not list(ch.paths.parts.rglob(".ok")), "nothing may be installed by a refused check"
    return info.value


@pytest.fixture
def served(tmp_path: Path, processes):
    repo = make_repo(tmp_path)
    server = processes.adopt(ServedRepo(repo.dir))
    return repo, server


def test_happy_check_over_mtls_verifies_every_part(tmp_path: Path, processes) -> None:
    from provisioning.ca import init_ca, issue_node

    ca = init_ca(tmp_path / "ca")
    node = issue_node("n1", tmp_path / "ca", tmp_path / "id")
    repo = make_repo(tmp_path)
    add_full_release(repo, tmp_path, 1)
    server = processes.adopt(ServedRepo(repo.dir, tls_cert=ca.server_cert, tls_key=ca.server_key, tls_ca=ca.ca_cert))
    url = server.url.replace("127.0.0.1", "localhost")
    # without the node's certificate the server does not even answer
    bare = refused(checker(tmp_path / "bare", url, repo, tls=TlsFiles(ca=ca.ca_cert)))
    assert "download" in bare.reason
    ch = checker(tmp_path / "node", url, repo, tls=TlsFiles(ca=node.ca_cert, cert=node.cert, key=node.key))
    plan = ch.run()
    assert plan.release.release == 1 and set(plan.files) == {"agent", "model", "config"}
    for kind, path in plan.files.items():
        assert path.read_bytes() == _served_bytes(repo, plan.release.parts[kind])
    downloading = [s.progress for s in ch.status.history if s.state == "downloading"]
    assert downloading and downloading[-1].total == sum(p.length for p in plan.release.parts.values())
    states = [s.state for s in ch.status.history]
    assert states[0] == "checking" and "downloading" in states and states[-1] == "verifying"
    assert float(ch.paths.time_floor.read_text()) <= time.time()


def _served_bytes(repo: ReleaseRepo, ref) -> bytes:
    folder, _, name = ref.path.rpartition("/")
    return (repo.targets_dir / folder / f"{ref.sha256}.{name}").read_bytes()


def test_tampered_target_is_refused_and_deleted(tmp_path: Path, served) -> None:
    repo, server = served
    rel = add_full_release(repo, tmp_path, 1)
    stored = repo.targets_dir / "config" / "r1" / f"{rel.parts['config'].sha256}.config.toml"
    stored.write_bytes(stored.read_bytes().replace(b"threshold", b"thresholX"))
    r = refused(checker(tmp_path / "node", server.url, repo))
    assert r.state == "refused" and "length or hash differs" in r.reason
    assert not (tmp_path / "node" / "ota" / "downloads" / rel.parts["config"].sha256).exists()


def test_tampered_metadata_is_refused(tmp_path: Path, served) -> None:
    repo, server = served
    add_full_release(repo, tmp_path, 1, device_types=["jetson"])
    path = max(repo.meta_dir.glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0]))
    doc = json.loads(path.read_text())
    doc["signed"]["targets"][TargetPaths.release("stable")]["custom"]["device_types"] = []
    path.write_text(json.dumps(doc))
    r = refused(checker(tmp_path / "node", server.url, repo))
    assert r.state == "refused" and r.reason.startswith("metadata:")


def test_downgrade_by_counter_and_by_older_metadata(tmp_path: Path, served) -> None:
    repo, server = served
    add_full_release(repo, tmp_path, 2)
    node = tmp_path / "node"
    ch = checker(node, server.url, repo)
    OtaState(running=3).save(ch.paths.state)
    r = refused(checker(node, server.url, repo))
    assert "downgrade: release 2 is older than the running 3" in r.reason

    # an attacker (or a stale mirror) serves the repository as it was before a newer timestamp the node saw
    old = tmp_path / "old-repo"
    shutil.copytree(repo.dir, old)
    repo = ReleaseRepo(repo.dir, repo.keys).load()
    repo.refresh()
    node2 = tmp_path / "node2"
    checker(node2, server.url, repo).run()
    shutil.rmtree(repo.dir)
    shutil.copytree(old, repo.dir)
    r = refused(checker(node2, server.url, repo))
    assert r.reason.startswith("metadata: BadVersionNumberError")


def test_expired_metadata_is_refused(tmp_path: Path, processes) -> None:
    repo = make_repo(tmp_path, expiry=Expiry(timestamp=-1))
    add_full_release(repo, tmp_path, 1)
    server = processes.adopt(ServedRepo(repo.dir))
    r = refused(checker(tmp_path / "node", server.url, repo))
    assert r.reason.startswith("metadata: ExpiredMetadataError")


def test_freeze_a_timestamp_not_renewed_past_its_expiry_is_refused(tmp_path: Path, processes) -> None:
    repo = make_repo(tmp_path, expiry=Expiry(timestamp=4 / 86400))
    add_full_release(repo, tmp_path, 1)
    server = processes.adopt(ServedRepo(repo.dir))
    node = tmp_path / "node"
    checker(node, server.url, repo).run()  # fresh: accepted
    expires = repo.md["timestamp"].signed.expires
    while datetime.now(timezone.utc) <= expires:  # the repository (or a mirror) stops renewing it
        time.sleep(0.2)
    r = refused(checker(node, server.url, repo))
    assert r.reason.startswith("metadata: ExpiredMetadataError") and "timestamp" in r.reason


def test_wrong_device_type_is_refused(tmp_path: Path, served) -> None:
    repo, server = served
    add_full_release(repo, tmp_path, 1, device_types=["jetson-orin"])
    r = refused(checker(tmp_path / "node", server.url, repo, device_type="rpi4"))
    assert "wrong device type" in r.reason and r.release == 1


def test_mix_and_match_is_refused(tmp_path: Path, served) -> None:
    """A mirror serves release 2 with release 1's config: the release pins its config's hash."""
    repo, server = served
    one = add_full_release(repo, tmp_path, 1)
    two = add_full_release(repo, tmp_path, 2)
    assert one.parts["config"].sha256 != two.parts["config"].sha256
    stored2 = repo.targets_dir / "config" / "r2" / f"{two.parts['config'].sha256}.config.toml"
    stored1 = repo.targets_dir / "config" / "r1" / f"{one.parts['config'].sha256}.config.toml"
    stored2.write_bytes(stored1.read_bytes())
    r = refused(checker(tmp_path / "node", server.url, repo))
    assert "length or hash differs" in r.reason and r.release == 2


def test_disk_too_small_is_refused_before_downloading(tmp_path: Path, served) -> None:
    repo, server = served
    add_full_release(repo, tmp_path, 1)
    r = refused(checker(tmp_path / "node", server.url, repo, free=lambda _p: 100_000))
    assert r.reason.startswith("disk too small")
    assert not any((tmp_path / "node" / "ota" / "downloads").iterdir())
    assert not server.server.sent.get(next(iter([n for n in server.server.sent if n.endswith(".tar")]), ""), 0)


def test_truncated_download_resumes_where_it_stopped(tmp_path: Path, served) -> None:
    repo, server = served
    big = agent_bundle(tmp_path / "big", payload=os.urandom(3 * 1024 * 1024))
    rel = repo.add_release("stable", 1, {"agent": pack_agent(big, 1)})
    size = rel.parts["agent"].length
    server.server.max_bytes_per_response = size // 2  # the link drops halfway
    r = refused(checker(tmp_path / "node", server.url, repo))
    assert r.reason.startswith("download:")
    part = tmp_path / "node" / "ota" / "downloads" / f"{rel.parts['agent'].sha256}.part"
    assert 0 < part.stat().st_size < size
    server.server.max_bytes_per_response = None
    plan = checker(tmp_path / "node", server.url, repo).run()
    assert plan.files["agent"].stat().st_size == size
    sent = server.server.sent[f"{rel.parts['agent'].sha256}.agent-bundle.tar"]
    assert size <= sent <= 1.1 * size


def test_no_check_without_a_trustworthy_clock(tmp_path: Path, served) -> None:
    repo, server = served
    add_full_release(repo, tmp_path, 1)
    r = refused(checker(tmp_path / "node", server.url, repo, synced=False))
    assert r.reason.startswith("clock not synchronised")
    ch = checker(tmp_path / "node", server.url, repo)
    ch.paths.time_floor.write_text(f"{time.time() + 86400}\n")  # a clock that went back a day
    assert "before the last verified update check" in refused(ch).reason


def test_rollout_cohorts(tmp_path: Path, served) -> None:
    ids = [f"node-{i:03d}" for i in range(200)]
    seed = "9f0c2a7e11d34b5c"
    at20 = {n for n in ids if in_rollout(n, seed, 20)}
    at50 = {n for n in ids if in_rollout(n, seed, 50)}
    assert 28 <= len(at20) <= 52  # 20 ± 6 % of 200
    assert at20 <= at50
    assert all({n for n in ids if in_rollout(n, seed, p)} <= {n for n in ids if in_rollout(n, seed, p + 1)}
               for p in range(100))

    repo, server = served
    add_full_release(repo, tmp_path, 1, percent=0)
    ro = repo.rollout("stable", 20)
    inside = next(n for n in ids if bucket(n, ro.seed) < 20)
    outside = next(n for n in ids if bucket(n, ro.seed) >= 20)
    r = refused(checker(tmp_path / "out", server.url, repo, node_id=outside))
    assert r.state == "waiting" and "not in the 20% rollout" in r.reason
    assert checker(tmp_path / "in", server.url, repo, node_id=inside).run().release.release == 1


def test_node_follows_root_and_targets_rotation(tmp_path: Path, served) -> None:
    repo, server = served
    add_full_release(repo, tmp_path, 1)
    node = tmp_path / "node"
    checker(node, server.url, repo).run()
    repo = ReleaseRepo(repo.dir, repo.keys).load()
    repo.rotate("root")
    repo.rotate("targets")
    add_full_release(repo, tmp_path, 2)
    assert checker(node, server.url, repo).run().release.release == 2
    assert (node / "ota" / "metadata" / "root_history" / "2.root.json").exists()
