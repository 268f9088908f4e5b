"""The committed contract docs must be what the payload models generate."""

from pathlib import Path

from agent.contract_docs import check_docs, render

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_committed_docs_are_fresh():
    assert check_docs(DOCS) == [], "run `edgecam contract` and commit docs/"


def test_stale_docs_are_detected(tmp_path):
    for rel, text in render().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "schemas/Event.schema.json").write_text("{}")
    assert check_docs(tmp_path) == ["schemas/Event.schema.json"]
    (tmp_path / "schemas/OtaJob.schema.json").write_text("{}")  # a model that left the contract
    assert check_docs(tmp_path) == ["schemas/Event.schema.json", "schemas/OtaJob.schema.json"]


def test_asyncapi_covers_every_contract_topic():
    import json

    doc = json.loads(render()["asyncapi.json"])
    addresses = {ch["address"] for ch in doc["channels"].values()}
    for leaf in ("state", "health", "events", "thumbs/{event_id}", "cmd/req", "cmd/res", "config/desired",
                 "config/reported"):
        assert f"edgecam/v1/{{node_id}}/{leaf}" in addresses
    assert "edgecam/v1/centre/state" in addresses
    assert {"edgecam/v1/enrol/{claim_id}/csr", "edgecam/v1/enrol/{claim_id}/cert", "edgecam/v1/{node_id}/cert/csr",
            "edgecam/v1/{node_id}/cert/res"} <= addresses
    assert {"edgecam/v1/{node_id}/ota/job", "edgecam/v1/{node_id}/ota/status",
            "edgecam/v1/fleet/releases/{channel}"} <= addresses
    assert doc["asyncapi"] == "3.0.0"
