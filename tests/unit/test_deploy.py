"""deploy/ and docker-compose.yml agree with the code (no Docker engine needed).

The compose file is read as Compose would under each profile: the default one (one
NATS server) and ``cluster`` (three NATS nodes, from ``deploy/cluster.env``), with
``${VAR:-default}`` interpolated. Prometheus's rules run through ``promtool``; every
metric the dashboards and rules read must be exported by some service.
"""

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from faststream.prometheus.container import MetricsContainer
from prometheus_client import CollectorRegistry

from dmdesk.cli import parser
from dmdesk.natsserver import nats_server_binary
from dmdesk.supervisor import SERVICES, service_port
from shared.service import service_app
from shared.settings import Settings
from tests.tools import (
    DASHBOARDS,
    DEPLOY,
    PROMETHEUS_METRICS,
    ToolMissingError,
    dashboard_expressions,
    prometheus_tool,
    shipped_expressions,
)

ROOT = Path(__file__).parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CLUSTER_ENV = DEPLOY / "cluster.env"
DMDESK_IMAGE = "dmdesk:latest"
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
ENV_EXAMPLE = DEPLOY / "env.example"


def env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines, as ``docker compose --env-file`` reads them."""
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


class MissingVariableError(Exception):
    """A ``${VAR:?message}`` whose variable is unset or empty: Compose refuses to start."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` with Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` and
    ``${VAR:?message}`` resolved."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def resolve(match: re.Match[str]) -> str:
        name, operator, default = match.groups()
        if operator == ":-":
            return env.get(name) or default
        if operator == "-":
            return env.get(name, default)
        if operator in (":?", "?") and not env.get(name):
            raise MissingVariableError(f"{name}: {default}")
        return env.get(name, "")

    return _VARIABLE.sub(resolve, value)


def filled_in(path: Path) -> dict[str, str]:
    """deploy/env.example as a platform engineer fills it in (a value for every variable)."""
    return {key: value or f"filled-in-{key.lower()}" for key, value in env_file(path).items()} | {
        "DMDESK_SEND_ADAPTER": "meta"
    }


SECRETS = filled_in(ENV_EXAMPLE)
PROFILES = {"default": SECRETS, "cluster": SECRETS | env_file(CLUSTER_ENV)}


def compose(profile: str, **env: str) -> dict[str, Any]:
    """The services Compose runs under ``profile`` (its env files plus ``env``), interpolated."""
    variables = PROFILES[profile] | env
    return compose_with(variables)


def compose_with(variables: dict[str, str]) -> dict[str, Any]:
    """The services Compose runs with ``variables``, interpolated."""
    active = set(filter(None, variables.get("COMPOSE_PROFILES", "").split(",")))
    document: dict[str, Any] = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), variables)
    document["services"] = {
        name: spec
        for name, spec in document["services"].items()
        if not spec.get("profiles") or active & set(spec["profiles"])
    }
    return document


def dmdesk_services(profile: str, **env: str) -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in compose(profile, **env)["services"].items()
        if spec.get("image") == DMDESK_IMAGE
    }


def nats_nodes(profile: str) -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in compose(profile)["services"].items()
        if str(spec.get("image", "")).startswith("nats:")
    }


def settings_from(environment: dict[str, str]) -> Settings:
    """The Settings a process gets from ``environment`` and nothing else (lists as JSON...)."""
    with mock.patch.dict(os.environ, environment, clear=True):
        return Settings()


def settings_of(spec: dict[str, Any]) -> Settings:
    """The Settings a compose service's DMDESK_* environment gives its process."""
    return settings_from({k: str(v) for k, v in spec["environment"].items()})


def nats_config(spec: dict[str, Any]) -> Path:
    """The deploy/nats file a NATS node's ``--config`` names (mounted at /etc/nats)."""
    command: list[str] = spec["command"]
    mounted = command[command.index("--config") + 1]
    assert mounted.startswith("/etc/nats/"), mounted
    assert any(v.startswith("./deploy/nats:/etc/nats") for v in spec["volumes"])
    return DEPLOY / "nats" / mounted.removeprefix("/etc/nats/")


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_compose_runs_every_service_and_only_real_commands(profile: str) -> None:
    services = dmdesk_services(profile)
    assert set(services) == set(SERVICES)
    for name, spec in services.items():
        args = parser().parse_args(spec["command"])
        assert args.command == name


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_sets_only_real_settings(profile: str, name: str) -> None:
    fields = {f"DMDESK_{field.upper()}" for field in Settings.model_fields}
    environment: dict[str, Any] = dmdesk_services(profile)[name]["environment"]
    unknown = {key for key in environment if key.startswith("DMDESK_")} - fields
    assert unknown == set()
    settings_of(dmdesk_services(profile)[name])  # every value parses


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_ports_and_health_checks_match_the_code(name: str) -> None:
    spec = dmdesk_services("default")[name]
    settings = settings_of(spec)
    port = service_port(settings, name)
    health = " ".join(spec["healthcheck"]["test"])
    assert re.search(rf"http://localhost:{port}/readyz", health), health
    for mapping in spec.get("ports", []):
        assert mapping.endswith(f":{port}")
    module = __import__(f"services.{name}.app", fromlist=["build"])
    paths = set(service_app(module.build(settings)).openapi()["paths"])
    assert {"/healthz", "/readyz", "/metrics"} <= paths


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_replica_count_is_set_from_the_environment(name: str) -> None:
    variable = f"{name.upper()}_REPLICAS"
    assert int(dmdesk_services("default")[name]["deploy"]["replicas"]) == 1
    scaled = dmdesk_services("default", **{variable: "3"})[name]
    assert int(scaled["deploy"]["replicas"]) == 3


def test_default_profile_runs_one_nats_server_and_unreplicated_streams() -> None:
    [(name, node)] = nats_nodes("default").items()
    assert nats_config(node).name == "single.conf"
    for spec in dmdesk_services("default").values():
        settings = settings_of(spec)
        assert settings.nats_url == f"nats://{name}:4222"
        assert settings.stream_replicas == 1


def test_cluster_profile_runs_three_routed_jetstream_nodes() -> None:
    nodes = nats_nodes("cluster")
    assert len(nodes) == 3
    names = {spec["environment"]["NATS_SERVER_NAME"] for spec in nodes.values()}
    assert len(names) == 3, "every JetStream node needs its own server name"
    configs = {nats_config(spec) for spec in nodes.values()}
    assert {path.name for path in configs} == {"cluster.conf"}
    text = (DEPLOY / "nats" / "cluster.conf").read_text()
    routes = set(re.findall(r"nats-route://([\w-]+):6222", text))
    assert routes == set(nodes)
    assert re.search(r"^\s*jetstream\s*\{", text, re.MULTILINE)
    volumes = {volume.split(":")[0] for spec in nodes.values() for volume in spec["volumes"]}
    assert len(volumes - {"./deploy/nats"}) == 3, "every node keeps its own store"


def test_cluster_profile_replicates_streams_on_every_node_and_connects_to_all() -> None:
    nodes = set(nats_nodes("cluster"))
    for name, spec in dmdesk_services("cluster").items():
        settings = settings_of(spec)
        assert settings.stream_replicas == len(nodes) == 3
        servers = {
            url.removeprefix("nats://").removesuffix(":4222")
            for url in settings.nats_url.split(",")
        }
        assert servers == nodes, name
        assert set(spec["depends_on"]) >= nodes, "a replicated stream needs its quorum"


def test_cluster_profile_runs_two_replicas_of_each_stream_processor() -> None:
    services = dmdesk_services("cluster")
    assert int(services["classifier"]["deploy"]["replicas"]) == 2
    assert int(services["responder"]["deploy"]["replicas"]) == 2


def nats_passwords() -> dict[str, str]:
    return {key: value for key, value in SECRETS.items() if key.startswith("NATS_")}


@pytest.mark.parametrize("config", ["single.conf", "cluster.conf"])
def test_nats_configs_are_valid_for_nats_server(config: str) -> None:
    result = subprocess.run(
        [str(nats_server_binary()), "-t", "-c", str(DEPLOY / "nats" / config)],
        env={**os.environ, "NATS_SERVER_NAME": "test"} | nats_passwords(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_entrypoint_is_the_dmdesk_command() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["dmdesk"]' in dockerfile


def test_prometheus_scrapes_each_service_on_its_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        (entry["names"][0], entry["port"])
        for job in config["scrape_configs"]
        for entry in job.get("dns_sd_configs", [])
    }
    defaults = Settings()
    assert targets == {(name, service_port(defaults, name)) for name in SERVICES}
    # The rules select job "dmdesk" and group by the `service` label.
    [job] = config["scrape_configs"]
    assert job["job_name"] == "dmdesk"
    assert {"target_label": "service", "source_labels": ["__meta_dns_name"]} in job[
        "relabel_configs"
    ]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_prometheus_and_grafana_are_provisioned_from_deploy(profile: str) -> None:
    services = compose(profile)["services"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()

    grafana = services["grafana"]["volumes"]
    provisioning = DEPLOY / "grafana" / "provisioning"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "dmdesk.yml").read_text())[
        "providers"
    ]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana


def prometheus_binary(name: str) -> Path:
    try:
        return prometheus_tool(name)
    except ToolMissingError as exc:
        pytest.skip(str(exc))


def test_promtool_accepts_the_config_and_the_rules() -> None:
    promtool = prometheus_binary("promtool")
    result = subprocess.run(
        [str(promtool), "check", "config", "prometheus.yml"],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "unit_test", sorted(p.name for p in (DEPLOY / "prometheus" / "tests").glob("*.yml"))
)
def test_alert_rules_pass_their_promtool_unit_tests(unit_test: str) -> None:
    promtool = prometheus_binary("promtool")
    result = subprocess.run(
        [str(promtool), "test", "rules", unit_test],
        cwd=DEPLOY / "prometheus" / "tests",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_promtool_unit_test() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tested = {
        case["alertname"]
        for path in (DEPLOY / "prometheus" / "tests").glob("*.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts - tested == set()


def exported_metric_names() -> set[str]:
    """Every series name some dmdesk service can export (whether it has samples yet or not)."""
    names: set[str] = set()
    settings = Settings()
    for name in SERVICES:
        module = __import__(f"services.{name}.app", fromlist=["build"])
        spec = module.build(settings)
        service_app(spec)  # adds the consumer-lag collector
        names |= set(spec.registry._names_to_collectors)
    faststream = CollectorRegistry()
    MetricsContainer(faststream, custom_label_names=())
    return names | set(faststream._names_to_collectors) | PROMETHEUS_METRICS


def test_every_metric_the_dashboards_and_rules_read_is_exported() -> None:
    exported = exported_metric_names()
    unknown = {
        expression.where: sorted(expression.metric_names() - exported)
        for expression in shipped_expressions()
        if expression.metric_names() - exported
    }
    assert unknown == {}


def test_every_dashboard_target_reads_a_metric() -> None:
    assert all(expression.metric_names() for expression in shipped_expressions())


def test_dashboards_are_provisionable() -> None:
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    uids = {source["uid"] for source in datasources}
    boards = [json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))]
    assert len(boards) >= 2
    assert len({board["uid"] for board in boards}) == len(boards)
    for board in boards:
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), board["uid"]
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] in uids, panel["title"]
                assert panel["targets"], panel["title"]
    assert len(dashboard_expressions()) >= 30


REQUIRED = sorted(set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text())))


def test_every_required_variable_is_in_the_env_example() -> None:
    assert REQUIRED, "the compose file requires its secrets"
    assert set(REQUIRED) <= set(env_file(ENV_EXAMPLE))
    secrets = [name for name in REQUIRED if "PASSWORD" in name or "SECRET" in name]
    assert all(env_file(ENV_EXAMPLE)[name] == "" for name in secrets), "no default passwords"


@pytest.mark.parametrize("variable", REQUIRED)
def test_compose_refuses_to_start_without_a_required_variable_and_names_it(
    variable: str,
) -> None:
    with pytest.raises(MissingVariableError, match=variable):
        compose_with({key: value for key, value in SECRETS.items() if key != variable})


def test_no_password_is_written_in_the_compose_file() -> None:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, spec in document["services"].items():
        for key, value in (spec.get("environment") or {}).items():
            if "PASSWORD" in key or "SECRET" in key or key == "DMDESK_DATABASE_URL":
                assert "${" in str(value), f"{name}: {key} is written in the file"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_only_loopback_ports_are_published_and_never_nats_or_postgres(profile: str) -> None:
    for name, spec in compose(profile)["services"].items():
        for mapping in spec.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), f"{name}: {mapping}"
        if name.startswith("nats") or name == "postgres":
            assert not spec.get("ports"), name


def test_each_service_connects_to_nats_as_its_own_user() -> None:
    text = (DEPLOY / "nats" / "auth.conf").read_text()
    users = set(re.findall(r"^\s*user:\s*(\w+)", text, re.MULTILINE))
    for name, spec in dmdesk_services("default").items():
        settings = settings_of(spec)
        assert settings.nats_user == name
        password = spec["environment"]["DMDESK_NATS_PASSWORD"]
        assert password == SECRETS[f"NATS_{name.upper()}_PASSWORD"]
    assert users == set(SERVICES)


def test_grafana_has_no_anonymous_access() -> None:
    grafana = compose("default")["services"]["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]


def test_the_image_is_built_once() -> None:
    builders = [name for name, spec in compose("default")["services"].items() if "build" in spec]
    assert builders == ["api"]
