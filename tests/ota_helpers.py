"""Helpers for the OTA tests: a release repository with real parts, a plain static server, a served RepoServer."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from provisioning.release.bundle import pack_agent, pack_config, pack_model
from provisioning.release.keys import KeyStore
from provisioning.release.repo import Expiry, ReleaseRepo
from provisioning.release.server import RepoServer

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models" / "demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """Wait until something accepts on 127.0.0.1:port (a condition, with a generous bound for a loaded CI)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def static_server(processes, folder: Path) -> str:
    """Python's stock ``http.server`` over ``folder`` (an independent, plain static server); its URL."""
    port = free_port()
    proc = processes.popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                            "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return f"http://127.0.0.1:{port}"


class ServedRepo:
    """A ``RepoServer`` in a thread, stoppable by the ``processes`` fixture."""

    def __init__(self, repo: Path, **tls: Path) -> None:
        self.server = RepoServer(repo, **tls)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def agent_bundle(folder: Path, version: str = "0.2.0", payload: bytes = b"") -> Path:
    """A folder that looks like an agent bundle (edgecam's wheel + a dependency wheel) for the repository side."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"edgecam-{version}-py3-none-any.whl").write_bytes(b"PK fake wheel " + version.encode() + payload)
    (folder / "dep-1.0-py3-none-any.whl").write_bytes(b"PK dependency")
    return folder


def config_toml(path: Path, threshold: float = 0.5) -> Path:
    path.write_text(f"[tracker]\nthreshold = {threshold}\n", encoding="utf-8")
    return path


def make_repo(tmp: Path, threshold: int = 1, root_keys: int | None = None,
              expiry: Expiry | None = None) -> ReleaseRepo:
    repo = ReleaseRepo(tmp / "repo", KeyStore(tmp / "repo.keys"), expiry)
    repo.init(threshold=threshold, root_keys=root_keys)
    return repo


def add_full_release(repo: ReleaseRepo, tmp: Path, release: int, channel: str = "stable",
                     agent_version: str = "0.2.0", device_types: list[str] | None = None, percent: int = 100):
    """A release with all three parts (agent, the demo model, a config)."""
    parts = {
        "agent": pack_agent(agent_bundle(tmp / f"bundle{release}", agent_version), release),
        "model": pack_model(DEMO_MODEL, release),
        "config": pack_config(config_toml(tmp / f"c{release}.toml", 0.4 + release / 100), release),
    }
    return repo.add_release(channel, release, parts, device_types=device_types, percent=percent)


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


FAKE_AGENT = '''"""A stand-in agent release for OTA tests: does what MODE says, reports health as the real one does."""
import json, os, sys, time
MODE = {mode!r}

def main():
    state_dir = os.environ["OTA_FAKE_AGENT_STATE_DIR"]
    ota = os.path.join(state_dir, "ota")
    release = int(os.path.basename(os.readlink(os.path.join(ota, "current")))[1:])
    if MODE == "crash":
        print("fake agent: crashing at start", file=sys.stderr)
        sys.exit(3)
    health = {{"release": release, "healthy_since": time.time() if MODE == "healthy" else None,
               "reason": None if MODE == "healthy" else "broker mqtt://127.0.0.1:1 not connected"}}
    tmp = os.path.join(ota, ".health.tmp")
    with open(tmp, "w") as fh:
        json.dump(health, fh)
    os.replace(tmp, os.path.join(ota, "health.json"))
    print("fake agent", {version!r}, MODE, "release", release)
'''


def fake_agent_wheel(folder: Path, version: str, mode: str, requires: str | None = None) -> Path:
    """A real, installable wheel named edgecam (console script ``edgecam``) whose agent does ``mode``."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    dist = f"edgecam-{version}.dist-info"
    files = {
        "fakeagent.py": FAKE_AGENT.format(mode=mode, version=version),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: edgecam\nVersion: {version}\n"
                            + (f"Requires-Dist: {requires}\n" if requires else ""),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[console_scripts]\nedgecam = fakeagent:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    path = folder / f"edgecam-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            zf.writestr(info, text)
    return folder
