"""Technician and maintainer tools: CA and node identity, broker config and ACLs, OTA releases,
the reference centre receiver, systemd and first-boot templates."""
