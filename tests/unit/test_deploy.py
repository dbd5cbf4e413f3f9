"""docker-compose.yml and the Dockerfile agree with the code (no Docker engine needed)."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dmdesk.cli import parser
from dmdesk.supervisor import SERVICES, service_port
from shared.settings import Settings

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DMDESK_SERVICES = {
    name: spec for name, spec in COMPOSE["services"].items() if spec.get("image") == "dmdesk:latest"
}


def test_compose_runs_every_service_and_only_real_commands() -> None:
    assert set(DMDESK_SERVICES) == set(SERVICES)
    for name, spec in DMDESK_SERVICES.items():
        args = parser().parse_args(spec["command"])
        assert args.command == name


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_sets_only_real_settings(name: str) -> None:
    fields = {f"DMDESK_{field.upper()}" for field in Settings.model_fields}
    environment: dict[str, Any] = DMDESK_SERVICES[name]["environment"]
    unknown = {key for key in environment if key.startswith("DMDESK_")} - fields
    assert unknown == set()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_ports_and_health_checks_match_the_code(name: str) -> None:
    spec = DMDESK_SERVICES[name]
    environment = {
        key: value for key, value in spec["environment"].items() if key.startswith("DMDESK_")
    }
    settings = Settings(
        **{key.removeprefix("DMDESK_").lower(): v for key, v in environment.items()}
    )
    port = service_port(settings, name)
    health = " ".join(spec["healthcheck"]["test"])
    assert re.search(rf"http://localhost:{port}/readyz", health), health
    for mapping in spec.get("ports", []):
        assert mapping.endswith(f":{port}")
    module = __import__(f"services.{name}.app", fromlist=["build"])
    from shared.service import service_app

    paths = set(service_app(module.build(settings)).openapi()["paths"])
    assert {"/healthz", "/readyz", "/metrics"} <= paths


def test_dockerfile_entrypoint_is_the_dmdesk_command() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["dmdesk"]' in dockerfile


def test_prometheus_scrapes_each_service_on_its_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        (entry["names"][0], entry["port"])
        for job in config["scrape_configs"]
        for entry in job.get("dns_sd_configs", [])
    }
    defaults = Settings()
    assert targets == {(name, service_port(defaults, name)) for name in SERVICES}
