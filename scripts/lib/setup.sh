# Shared set-up for scripts/demo, scripts/test and scripts/bench (sourced, not run).
# Installs, only when missing: Mosquitto (apt), python3-venv (apt), the project in .venv with EXTRAS.
# Re-running is cheap: the venv is reinstalled only when pyproject.toml changed.

set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
VENV="${EDGECAM_VENV:-$REPO/.venv}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root or sudo to run: $*" >&2; return 1; fi
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || { echo "no apt-get: install $* with your package manager" >&2; return 1; }
  if [ "$APT_UPDATED" = 0 ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_mosquitto() {
  if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    say "installing Mosquitto (apt)"
    apt_install mosquitto
  fi
  # the Debian package enables a system broker on 1883; our tests and demo start their own on free ports
}

ensure_unit_tools() {  # the unit and install-script tests: systemd-analyze verify, shellcheck
  local missing=()
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]} (apt)"
    apt_install "${missing[@]}"
  fi
}

check_local_broker() {  # after ensure_venv: can this account run a throw-away broker in a folder under $REPO?
  local dir
  dir="$(mktemp -d "$REPO/.broker-check.XXXXXX")"
  if ! python -c 'import sys; from pathlib import Path; from provisioning.local_broker import LocalBroker
b = LocalBroker(Path(sys.argv[1])); b.start(); b.stop()' "$dir" 2>"$dir/err"; then
    echo "cannot start a local Mosquitto here, which the demo, tests and bench need:" >&2
    tail -n 1 "$dir/err" | sed 's/^[A-Za-z_.]*Error: /  /' >&2
    rm -rf "$dir"
    exit 1
  fi
  rm -rf "$dir"
}

ensure_python() {
  local py="${PYTHON:-python3}"
  command -v "$py" >/dev/null || { say "installing python3 (apt)"; apt_install python3 python3-venv; }
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "edgecam needs Python 3.10 or newer; $("$py" --version) found" >&2; exit 1; }
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$py" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      say "installing python3-venv (apt)"
      apt_install python3-venv
      "$py" -m venv "$VENV"
    fi
  fi
}

ensure_venv() {  # ensure_venv "test,bench"
  local extras="$1"
  ensure_python
  local stamp="$VENV/.edgecam-installed"
  local want
  want="$(sha256sum pyproject.toml | cut -c1-16) [$extras]"
  if [ ! -f "$stamp" ] || ! grep -qxF -- "$want" "$stamp"; then
    say "installing edgecam and its dependencies into $VENV"
    local log="$VENV/pip-install.log"
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip \
           && "$VENV/bin/python" -m pip install -q -e ".[$extras]"; } >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      echo "pip install failed; full log: $log" >&2
      exit 1
    fi
    echo "$want" >> "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

ensure_wheelhouse() {  # after ensure_venv: $VENV/wheelhouse, this machine's agent bundle (the OTA agent tests
  # build release bundles offline from it, as a maintainer's release machine would from its own mirror)
  local stamp="$VENV/wheelhouse/.for" want
  want="$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ] || ! grep -qxF -- "$want" "$stamp"; then
    say "collecting the agent's dependency wheels into $VENV/wheelhouse"
    rm -rf "$VENV/wheelhouse" "$VENV/wheelhouse.new"
    local src
    src="$(mktemp -d "$VENV/wheelhouse-src.XXXXXX")"
    cp -a agent centre hardware models provisioning pyproject.toml README.md "$src"/  # builds outside the checkout
    if ! edgecam release bundle "$VENV/wheelhouse.new" --source "$src" >"$VENV/wheelhouse.log" 2>&1; then
      tail -n 5 "$VENV/wheelhouse.log" >&2
      echo "could not collect the agent's wheels; full log: $VENV/wheelhouse.log" >&2
      rm -rf "$src"
      exit 1
    fi
    rm -rf "$src"
    echo "$want" > "$VENV/wheelhouse.new/.for"
    mv "$VENV/wheelhouse.new" "$VENV/wheelhouse"
  fi
}
