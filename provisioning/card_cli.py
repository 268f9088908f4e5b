"""``edgecam provision card`` (technician's machine) and ``edgecam provision firstboot`` (the node, from
``edgecam-firstboot.service``), mounted on the ``provision`` group by ``add_card_commands``."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer


def card(
    boot: Path = typer.Argument(..., help="The flashed card's boot partition, mounted (bootfs)."),
    node_id: str = typer.Option(..., "--node-id", help="Node id (certificate CN, MQTT client id)."),
    broker: str = typer.Option(..., "--broker", help="The broker's enrolment listener, mqtts://host:P2."),
    token: str = typer.Option(..., "--token", help="Claim token from `edgecam provision token NODE_ID`."),
    ca_cert: Path = typer.Option(..., "--ca-cert", help="CA certificate the node pins (CA/ca.crt)."),
    mqtt: str | None = typer.Option(None, "--mqtt", help="The agent's broker (default: --broker's host, 8883)."),
    wifi: str | None = typer.Option(None, "--wifi", help="SSID:PASSPHRASE (split at the first colon)."),
    wifi_ssid: str | None = typer.Option(None, "--wifi-ssid", help="Wi-Fi network name."),
    wifi_psk: str | None = typer.Option(None, "--wifi-psk", help="Wi-Fi passphrase (8-63) or 64-hex PSK."),
    wifi_country: str | None = typer.Option(None, "--wifi-country", help="Regulatory domain, e.g. VN, DE."),
    config: Path | None = typer.Option(None, "--config", help="A full agent config to install as node.toml."),
    plain: bool = typer.Option(False, "--plain", help="Any folder (a USB stick for a Jetson): provision file only."),
    ota_root: Path | None = typer.Option(None, "--ota-root", help="The release repository's trusted root "
                                         "(REPO/metadata/1.root.json), installed at first boot."),
    ota_url: str | None = typer.Option(None, "--ota-url", help="The release repository's URL (ota.repo_url)."),
) -> None:
    """Prepare a flashed Raspberry Pi OS card: edgecam-provision.toml plus cloud-init or firstrun.sh."""
    from provisioning.card import provision_card
    from provisioning.card_image import Wifi
    from provisioning.card_model import CardError

    if wifi is not None and (wifi_ssid or wifi_psk):
        raise CardError("give --wifi SSID:PSK or --wifi-ssid/--wifi-psk, not both")
    if wifi is not None:
        if ":" not in wifi:
            raise CardError("--wifi: expected SSID:PASSPHRASE")
        wifi_ssid, wifi_psk = wifi.split(":", 1)
    if (wifi_ssid is None) != (wifi_psk is None):
        raise CardError("--wifi-ssid and --wifi-psk go together")
    net = Wifi(wifi_ssid, wifi_psk, wifi_country) if wifi_ssid is not None and wifi_psk is not None else None
    kind, written = provision_card(boot, node_id, broker, token, ca_cert, mqtt_url=mqtt, wifi=net,
                                   node_config=config, plain=plain, ota_root=ota_root, ota_url=ota_url)
    typer.echo(f"{boot}: {kind} image" if kind else f"{boot}: provision file only (run `edgecam provision firstboot "
               f"--boot` on the node with this folder)")
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo("the node enrols at first boot; read edgecam-firstboot.log on this card afterwards")


def firstboot(
    boot: Path = typer.Option(Path("/boot/firmware"), "--boot", help="Where the card's boot partition is."),
    root: Path = typer.Option(Path("/"), "--root", help="The node's root (a fixture tree in tests)."),
    # no envvar: EDGECAM_* variables are agent config (an unknown one would stop `edgecam run`)
    edgecam: str | None = typer.Option(None, "--edgecam",
                                       help="Command that runs the edgecam CLI for `provision enrol`."),
) -> None:
    """First boot from the card: node config, enrolment, token off the card, agent enabled (idempotent)."""
    from provisioning.firstboot import firstboot as run_firstboot

    code = run_firstboot(boot, root, shlex.split(edgecam) if edgecam else None,
                         echo=lambda line: print(line, flush=True))
    raise typer.Exit(code)


def add_card_commands(provision_app: typer.Typer) -> None:
    provision_app.command("card")(card)
    provision_app.command("firstboot")(firstboot)

