"""deploy/k8s agrees with the code, on the same facts as the compose file.

Each service's Deployment runs a real ``dmdesk`` command, sets only real settings,
listens where its settings say, probes ``/healthz`` (liveness) and ``/readyz``
(readiness) on that port, asks for resources, and its Service reaches it.
"""

from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from dmdesk.cli import parser
from dmdesk.supervisor import SERVICES, service_port
from shared.service import service_app
from shared.settings import Settings
from tests.unit.test_deploy import DMDESK_IMAGE, dmdesk_services, env_file, settings_from

K8S = Path(__file__).parents[2] / "deploy" / "k8s"
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
MANIFESTS = [
    document
    for name in KUSTOMIZATION["resources"]
    for document in yaml.safe_load_all((K8S / name).read_text())
    if document
]
SETTINGS_FIELDS = {f"DMDESK_{field.upper()}" for field in Settings.model_fields}
# deploy/k8s/secrets.env as a platform engineer writes it (the example, filled in).
SECRETS = {
    key: value or f"filled-in-{key.lower()}"
    for key, value in env_file(K8S / "secrets.env.example").items()
}


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in MANIFESTS if doc["kind"] == kind}


def deployment(service: str) -> dict[str, Any]:
    return resources("Deployment")[f"dmdesk-{service}"]


def container(service: str) -> dict[str, Any]:
    [only] = deployment(service)["spec"]["template"]["spec"]["containers"]
    spec: dict[str, Any] = only
    return spec


def environment(service: str) -> dict[str, str]:
    """What the container's environment holds: its ConfigMaps, Secrets and own variables."""
    spec = container(service)
    values: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if ref := source.get("configMapRef"):
            values |= resources("ConfigMap")[ref["name"]]["data"]
    for item in spec.get("env", []):
        if "value" in item:
            values[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] in generated_secrets()
            values[item["name"]] = SECRETS[ref["key"]]
    return values


def generated_secrets() -> set[str]:
    return {generator["name"] for generator in KUSTOMIZATION.get("secretGenerator", [])}


def settings(service: str) -> Settings:
    return settings_from({k: str(v) for k, v in environment(service).items()})


def container_port(service: str, name_or_number: str | int) -> int:
    ports = container(service)["ports"]
    if isinstance(name_or_number, int):
        return name_or_number
    [port] = [p["containerPort"] for p in ports if p.get("name") == name_or_number]
    return int(port)


def test_every_manifest_file_is_in_the_kustomization() -> None:
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(KUSTOMIZATION["resources"]) == files


def test_one_deployment_and_one_service_per_dmdesk_service() -> None:
    assert set(resources("Deployment")) == {f"dmdesk-{name}" for name in SERVICES}
    assert set(resources("Service")) == {f"dmdesk-{name}" for name in SERVICES}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_deployment_runs_the_real_command_from_the_compose_image(service: str) -> None:
    spec = container(service)
    assert "command" not in spec, "the image's entry point is the dmdesk command"
    assert parser().parse_args(spec["args"]).command == service
    [image] = [i for i in KUSTOMIZATION["images"] if i["name"] == spec["image"]]
    assert spec["image"] == DMDESK_IMAGE.split(":")[0]
    assert dmdesk_services("default")[service]["image"] == DMDESK_IMAGE
    # A tag someone can pull: the release, never `latest`, from a registry.
    assert image["newTag"] == version("dmdesk")
    assert "/" in image["newName"]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_deployment_sets_only_real_settings(service: str) -> None:
    unknown = {key for key in environment(service) if key.startswith("DMDESK_")}
    assert unknown - SETTINGS_FIELDS == set()
    secret_fields = {
        f"DMDESK_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if "Secret" in str(field.annotation) or name == "database_url"
    }
    nats_passwords = {f"NATS_{name.upper()}_PASSWORD" for name in SERVICES}
    key_hashes = {"DMDESK_INGEST_API_KEY_HASHES", "DMDESK_INGEST_TRUSTED_KEY_HASHES"}
    assert set(SECRETS) <= secret_fields | nats_passwords | key_hashes
    for config in resources("ConfigMap").values():
        assert not set(config["data"]) & secret_fields, "no secret in the ConfigMap"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_ports_and_probes_match_the_code(service: str) -> None:
    port = service_port(settings(service), service)
    spec = container(service)
    assert [p["containerPort"] for p in spec["ports"]] == [port]
    assert settings(service).host == "0.0.0.0"
    probes = {kind: spec[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in [*probes.values(), spec.get("startupProbe", {}).get("httpGet")]:
        if probe is not None:
            assert container_port(service, probe["port"]) == port
    module = __import__(f"services.{service}.app", fromlist=["build"])
    paths = set(service_app(module.build(settings(service))).openapi()["paths"])
    assert {"/healthz", "/readyz", "/metrics"} <= paths

    annotations = deployment(service)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_reaches_the_pods_port(service: str) -> None:
    selector = resources("Service")[f"dmdesk-{service}"]["spec"]["selector"]
    template = deployment(service)["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template.items()
    assert deployment(service)["spec"]["selector"]["matchLabels"].items() <= template.items()
    [port] = resources("Service")[f"dmdesk-{service}"]["spec"]["ports"]
    port_number = service_port(settings(service), service)
    assert container_port(service, port["targetPort"]) == port_number
    assert port["port"] == port_number


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_deployment_requests_resources_and_stops_gracefully(service: str) -> None:
    limits = container(service)["resources"]
    assert {"cpu", "memory"} <= set(limits["requests"])
    assert "memory" in limits["limits"]
    grace = deployment(service)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings(service).graceful_timeout_seconds


def test_streams_are_replicated_on_a_nats_cluster() -> None:
    for service in SERVICES:
        assert settings(service).stream_replicas == 3


def test_no_secret_with_placeholder_values_is_applied() -> None:
    """The Secret comes from a file the user writes (git-ignored), never from the repo."""
    assert resources("Secret") == {}
    [generator] = KUSTOMIZATION["secretGenerator"]
    assert generator["envs"] == ["secrets.env"]
    ignored = (K8S.parents[1] / ".gitignore").read_text().splitlines()
    assert "deploy/k8s/secrets.env" in ignored
    placeholders = [
        key
        for key, value in env_file(K8S / "secrets.env.example").items()
        if "PASSWORD" in key and value
    ]
    assert placeholders == []


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_deployment_connects_to_nats_as_its_own_user(service: str) -> None:
    assert settings(service).nats_user == service
    assert (
        settings(service).nats_password.get_secret_value()
        == SECRETS[f"NATS_{service.upper()}_PASSWORD"]
    )
