"""The release repository (issue 14, repository side): a TUF repository any python-tuf client verifies as is.

An independent ``tuf.ngclient.Updater`` reads REPO through Python's stock ``http.server`` (no code of ours on
the client's path) and must verify every target, and refuse a tampered target or tampered metadata.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tuf.api.exceptions import LengthOrHashMismatchError, RepositoryError
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater

from agent.ota.manifest import ReleaseInfo, RolloutInfo, TargetPaths
from provisioning.release.keys import KeyStore
from provisioning.release.repo import ReleaseRepo, RepoError
from tests.ota_helpers import (
    DEMO_MODEL,
    add_full_release,
    agent_bundle,
    config_toml,
    make_repo,
    static_server,
    tar_names,
)


def updater(repo_dir: Path, url: str, client: Path) -> Updater:
    """A stock ngclient pointed at a static server over REPO, trusting REPO/metadata/1.root.json."""
    (client / "metadata").mkdir(parents=True, exist_ok=True)
    (client / "targets").mkdir(parents=True, exist_ok=True)
    return Updater(str(client / "metadata"), f"{url}/metadata/", str(client / "targets"), f"{url}/targets/",
                   bootstrap=(repo_dir / "metadata" / "1.root.json").read_bytes())


def all_target_paths(repo_dir: Path) -> list[str]:
    meta = repo_dir / "metadata"
    paths = []
    for role in ("targets", "rollout"):
        newest = max(meta.glob(f"*.{role}.json"), key=lambda p: int(p.name.split(".")[0]))
        paths += list(json.loads(newest.read_text())["signed"]["targets"])
    return paths


def edgecam(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_cli_builds_a_repository_a_stock_client_verifies(tmp_path: Path, processes) -> None:
    repo = tmp_path / "repo"
    r = edgecam("release", "init", str(repo), "--threshold", "2", "--root-keys", "3")
    assert r.returncode == 0, r.stderr
    root = Metadata.from_file(str(repo / "metadata" / "1.root.json")).signed
    assert root.consistent_snapshot and root.roles["root"].threshold == 2 and len(root.roles["root"].keyids) == 3
    assert not list(repo.rglob("*.pem")), "no key may sit inside REPO"
    assert len(list((tmp_path / "repo.keys" / "offline" / "root").glob("*.pem"))) == 3
    bundle = agent_bundle(tmp_path / "bundle")
    r = edgecam("release", "add", str(repo), "--channel", "stable", "--version", "1", "--agent", str(bundle),
                "--model", str(DEMO_MODEL), "--config", str(config_toml(tmp_path / "c.toml")),
                "--device-type", "rpi4", "--device-type", "rpi5", "--expires", "30")
    assert r.returncode == 0, r.stderr

    client = updater(repo, static_server(processes, repo), tmp_path / "client")
    client.refresh()
    paths = all_target_paths(repo)
    assert len(paths) == 5  # release, agent, model, config, rollout
    for path in paths:
        info = client.get_targetinfo(path)
        assert info is not None, path
        got = Path(client.download_target(info))
        assert client.find_cached_target(info, str(got)) == str(got)
    rel = ReleaseInfo.model_validate(client.get_targetinfo(TargetPaths.release("stable")).custom)
    assert rel.release == 1 and rel.device_types == ["rpi4", "rpi5"] and set(rel.parts) == {"agent", "model", "config"}
    for kind, ref in rel.parts.items():  # the release pins each part's hash, and each part says what it is
        part = client.get_targetinfo(ref.path)
        assert part.hashes["sha256"] == ref.sha256 and part.length == ref.length
        assert part.custom["kind"] == kind and part.custom["release"] == 1
    assert rel.parts["agent"].version == "0.2.0"
    assert "model.tflite" in tar_names((tmp_path / "client" / "targets" / rel.parts["model"].path.replace("/", "%2F"))
                                       .read_bytes())
    rollout = RolloutInfo.model_validate(client.get_targetinfo(TargetPaths.rollout("stable")).custom)
    assert rollout.release == 1 and rollout.percent == 100


def test_rollout_needs_no_offline_key_and_keeps_the_seed(tmp_path: Path, processes) -> None:
    repo = make_repo(tmp_path)
    add_full_release(repo, tmp_path, 1, percent=0)
    seed = repo.current_rollout("stable").seed
    offline = repo.keys.dir / "offline"
    shutil.move(offline, tmp_path / "usb-stick")  # the offline keys are not here
    r = edgecam("release", "rollout", str(repo.dir), "--channel", "stable", "--percent", "20")
    assert r.returncode == 0, r.stderr
    client = updater(repo.dir, static_server(processes, repo.dir), tmp_path / "client")
    info = RolloutInfo.model_validate(client.get_targetinfo(TargetPaths.rollout("stable")).custom)
    assert (info.percent, info.seed, info.release) == (20, seed, 1)
    r = edgecam("release", "add", str(repo.dir), "--channel", "stable", "--version", "2",
                "--model", str(DEMO_MODEL))
    assert r.returncode != 0 and "targets: 1 key(s) needed" in r.stderr and "Traceback" not in r.stderr


def test_a_release_carries_unchanged_parts_and_counters_only_rise(tmp_path: Path) -> None:
    from provisioning.release.bundle import pack_model

    repo = make_repo(tmp_path)
    first = add_full_release(repo, tmp_path, 1)
    second = ReleaseRepo(repo.dir, repo.keys).load().add_release("stable", 2, {"model": pack_model(DEMO_MODEL, 2)})
    assert second.parts["agent"] == first.parts["agent"] and second.parts["config"] == first.parts["config"]
    assert second.parts["model"].path == "model/r2/demo.tar"
    assert second.parts["model"].sha256 == first.parts["model"].sha256
    with pytest.raises(RepoError, match="release counters only go up"):
        ReleaseRepo(repo.dir, repo.keys).load().add_release("stable", 2, {"model": pack_model(DEMO_MODEL, 2)})


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    make_repo(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text("[tracker]\nthreshold = 7\n")
    r = edgecam("release", "add", str(tmp_path / "repo"), "--channel", "stable", "--version", "1", "--config", str(bad))
    assert r.returncode == 2 and "tracker.threshold" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = edgecam("release", "add", str(tmp_path / "nowhere"), "--channel", "stable", "--version", "1")
    assert r.returncode == 2 and "no root metadata" in r.stderr
    r = edgecam("release", "add", str(tmp_path / "repo"), "--channel", "Bad Name", "--version", "1",
                "--model", str(DEMO_MODEL))
    assert r.returncode == 2 and "channel" in r.stderr


def test_tampered_target_is_refused(tmp_path: Path, processes) -> None:
    repo = make_repo(tmp_path)
    rel = add_full_release(repo, tmp_path, 1)
    ref = rel.parts["model"]
    folder, _, base = ref.path.rpartition("/")
    stored = repo.dir / "targets" / folder / f"{ref.sha256}.{base}"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    client = updater(repo.dir, static_server(processes, repo.dir), tmp_path / "client")
    info = client.get_targetinfo(ref.path)
    with pytest.raises(LengthOrHashMismatchError):
        client.download_target(info)


@pytest.mark.parametrize("role", ["targets", "snapshot", "timestamp", "rollout"])
def test_tampered_metadata_is_refused(tmp_path: Path, processes, role: str) -> None:
    repo = make_repo(tmp_path)
    add_full_release(repo, tmp_path, 1, device_types=["rpi4"])
    meta = repo.dir / "metadata"
    path = meta / "timestamp.json" if role == "timestamp" else max(
        meta.glob(f"*.{role}.json"), key=lambda p: int(p.name.split(".")[0]))
    doc = json.loads(path.read_text())
    if role == "targets":  # widen the device types of the release: the signature no longer matches
        doc["signed"]["targets"][TargetPaths.release("stable")]["custom"]["device_types"].append("jetson")
    elif role == "rollout":
        doc["signed"]["targets"][TargetPaths.rollout("stable")]["custom"]["percent"] = 0
    else:
        doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
    path.write_text(json.dumps(doc))
    client = updater(repo.dir, static_server(processes, repo.dir), tmp_path / "client")
    with pytest.raises(RepositoryError):
        client.refresh()
        client.get_targetinfo(TargetPaths.rollout("stable"))


def test_keys_load_back_and_threshold_is_enforced(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, threshold=2, root_keys=2)
    keys = KeyStore(repo.keys.dir)
    assert len(keys.signers("root")) == 2
    gone = next(keys.role_dir("root").glob("*.pem"))
    gone.unlink()
    with pytest.raises(RepoError, match="root: 2 key"):
        ReleaseRepo(repo.dir, keys).load().rotate("root")


def test_key_rotation_is_followed_and_the_retired_key_refused(tmp_path: Path, processes) -> None:
    """Root and targets keys rotated: a client holding version 1 of root follows; the retired key signs nothing."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner
    from tuf.api.exceptions import UnsignedMetadataError

    repo = make_repo(tmp_path, threshold=2, root_keys=3)
    add_full_release(repo, tmp_path, 1)
    url = static_server(processes, repo.dir)
    updater(repo.dir, url, tmp_path / "client").refresh()  # the client trusts the repository as it was
    repo = ReleaseRepo(repo.dir, repo.keys).load()
    old_root, _ = repo.rotate("root")
    old_targets, _ = repo.rotate("targets")
    add_full_release(repo, tmp_path, 2)
    client = updater(repo.dir, url, tmp_path / "client")
    client.refresh()
    assert ReleaseInfo.model_validate(client.get_targetinfo(TargetPaths.release("stable")).custom).release == 2

    # whoever still holds the retired targets key signs a release 3: refused by a client on the new root
    retired = next(repo.keys.role_dir("targets", retired=True).glob(f"{old_targets}.pem"))
    forger = CryptoSigner(load_pem_private_key(retired.read_bytes(), None))
    repo = ReleaseRepo(repo.dir, repo.keys).load()
    targets = repo.md["targets"]
    targets.signed.version += 1
    targets.signed.targets[TargetPaths.release("stable")].unrecognized_fields["custom"]["release"] = 3
    targets.signatures.clear()
    targets.sign(forger)
    (repo.meta_dir / f"{targets.signed.version}.targets.json").write_bytes(targets.to_bytes())
    repo._publish([], bump=True)  # the online keys happily point snapshot and timestamp at it
    snap = repo.md["snapshot"].signed
    assert snap.meta["targets.json"].version == targets.signed.version
    client = updater(repo.dir, url, tmp_path / "client2")
    with pytest.raises(UnsignedMetadataError):
        client.refresh()
    assert old_root not in Metadata.from_file(str(max(repo.meta_dir.glob("*.root.json")))).signed.roles["root"].keyids


def test_a_root_signed_by_the_retired_root_key_alone_is_refused(tmp_path: Path, processes) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    repo = make_repo(tmp_path)
    add_full_release(repo, tmp_path, 1)
    repo = ReleaseRepo(repo.dir, repo.keys).load()
    old, _new = repo.rotate("root")
    url = static_server(processes, repo.dir)
    updater(repo.dir, url, tmp_path / "client").refresh()  # follows 1 → 2
    retired = next(repo.keys.role_dir("root", retired=True).glob(f"{old}.pem"))
    forger = CryptoSigner(load_pem_private_key(retired.read_bytes(), None))
    root = repo.md["root"]
    root.signed.version = 3
    root.signed.roles["root"].keyids = [old]  # the thief tries to take root back with the retired key
    root.signed.keys[old] = forger.public_key
    root.signatures.clear()
    root.sign(forger)
    (repo.meta_dir / "3.root.json").write_bytes(root.to_bytes())
    with pytest.raises(RepositoryError):
        updater(repo.dir, url, tmp_path / "client").refresh()


def test_serve_answers_ranges_and_nothing_but_files(tmp_path: Path, processes) -> None:
    import urllib.error
    import urllib.request

    from tests.ota_helpers import free_port, wait_port

    repo = make_repo(tmp_path)
    rel = add_full_release(repo, tmp_path, 1)
    port = free_port()
    proc = processes.popen([sys.executable, "-m", "agent.cli", "release", "serve", str(repo.dir), "--port", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_port(port, proc)
    ref = rel.parts["model"]
    folder, _, name = ref.path.rpartition("/")
    url = f"http://127.0.0.1:{port}/targets/{folder}/{ref.sha256}.{name}"
    whole = urllib.request.urlopen(url, timeout=30)
    data, etag = whole.read(), whole.headers["ETag"]
    assert len(data) == ref.length and whole.headers["Accept-Ranges"] == "bytes"
    part = urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=100-", "If-Range": etag}),
                                  timeout=30)
    assert part.status == 206 and part.headers["Content-Range"] == f"bytes 100-{ref.length - 1}/{ref.length}"
    assert part.read() == data[100:]
    stale = urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=100-", "If-Range": '"old"'}),
                                   timeout=30)
    assert stale.status == 200 and stale.read() == data  # the file changed: start over
    for bad in ("/targets/", "/metadata/", "/../repo.keys/offline/", "/nothing.json"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{bad}", timeout=30)
        assert err.value.code == 404, bad
    r = edgecam("release", "serve", str(tmp_path / "nope"), "--port", str(port))
    assert r.returncode == 2 and "not a release repository" in r.stderr
