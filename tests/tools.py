"""What the deploy tests need: Prometheus's binaries and the PromQL the deploy ships.

Debian's ``prometheus`` package ships both. When they are missing and this process
may install packages (root, ``apt-get`` present), :func:`prometheus_tool` installs
the package once per machine (a file lock keeps parallel xdist workers from racing)
without letting its post-install script start a system Prometheus on port 9090.
Otherwise the caller gets :class:`ToolMissingError` with the reason, to skip on.
"""

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "prometheus"
INSTALL_LOCK = Path("/tmp/dmdesk-apt-install.lock")  # one lock for the machine
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
# Exit status 101 tells invoke-rc.d "action forbidden": the package installs, no daemon starts.
DENY_SERVICE_START = "#!/bin/sh\nexit 101\n"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/sbin", "/bin"])
INSTALL_TIMEOUT_SECONDS = 600


class ToolMissingError(Exception):
    """A tool is not installed and cannot be installed here; the message says why."""


def _which(name: str) -> Path | None:
    found = shutil.which(name, path=SEARCH_PATH)
    return Path(found) if found else None


@contextlib.contextmanager
def _services_may_not_start() -> Iterator[None]:
    """A policy-rc.d that forbids starting daemons, unless one is already in place."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text(DENY_SERVICE_START)
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def _stop_system_prometheus() -> None:
    """Stop a packaged Prometheus daemon that started anyway (systemd ignores policy-rc.d)."""
    for command in (
        ["systemctl", "disable", "--now", PACKAGE],
        ["service", PACKAGE, "stop"],
    ):
        if _which(command[0]) is not None:
            subprocess.run(command, check=False, capture_output=True, timeout=60)


def _install_with_apt() -> None:
    apt_get = _which("apt-get")
    if apt_get is None:
        raise ToolMissingError(
            "neither promtool nor apt-get is available to install Debian's prometheus"
        )
    if os.geteuid() != 0:
        raise ToolMissingError(f"promtool is missing and only root may `apt-get install {PACKAGE}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _services_may_not_start():
        for command in (
            [str(apt_get), "update"],
            [
                str(apt_get),
                "install",
                "-y",
                "--no-install-recommends",
                "-o",
                "Dpkg::Options::=--force-confold",
                PACKAGE,
            ],
        ):
            result = subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=INSTALL_TIMEOUT_SECONDS,
            )
            if result.returncode != 0:
                raise ToolMissingError(
                    f"`{' '.join(command)}` failed ({result.returncode}): {result.stderr[-2000:]}"
                )
    _stop_system_prometheus()


def prometheus_tool(name: str) -> Path:
    """The path of ``prometheus`` or ``promtool``, installing Debian's package if needed."""
    if (found := _which(name)) is not None:
        return found
    INSTALL_LOCK.touch(exist_ok=True)
    with INSTALL_LOCK.open("r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (found := _which(name)) is None:
                _install_with_apt()
                found = _which(name)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if found is None:
        raise ToolMissingError(f"Debian's {PACKAGE} package installed, but {name} is not on PATH")
    return found


# --- The PromQL the deploy ships: every dashboard target and every rule expression.

DEPLOY = Path(__file__).parents[1] / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
RULES = DEPLOY / "prometheus" / "alerts.yml"
# Grafana's built-in interval variables, as a test evaluates them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
METRIC_PREFIXES = ("dmdesk_", "process_", "python_")
PROMETHEUS_METRICS = frozenset({"up"})
_SELECTOR = re.compile(r"(?<![\w:$.])([a-zA-Z_][\w:]*)\s*(\{[^}]*\})?")
_KEYWORDS_BEFORE_PARENS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
)


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from."""

    where: str
    promql: str
    is_alert: bool = False

    def selectors(self) -> list[str]:
        """The metric selectors it reads, label matchers kept, ranges and offsets dropped."""
        found: list[str] = []
        text = _KEYWORDS_BEFORE_PARENS.sub(" ", self.promql)
        position = 0
        while match := _SELECTOR.search(text, position):
            name, matchers = match.group(1), match.group(2) or ""
            position = match.end()
            if name.startswith(METRIC_PREFIXES) or name in PROMETHEUS_METRICS:
                found.append(name + matchers)
        return list(dict.fromkeys(found))

    def metric_names(self) -> set[str]:
        """The metric names it reads."""
        return {selector.split("{", 1)[0] for selector in self.selectors()}


def grafana_expr(expr: str) -> str:
    """A dashboard target with Grafana's interval variables replaced."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def dashboard_expressions() -> list[Expression]:
    """Every target of every panel of every provisioned dashboard."""
    found: list[Expression] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in _panels(board["panels"]):
            for target in panel.get("targets", []):
                where = f"{path.name}: {panel['title']} [{target['refId']}]"
                found.append(Expression(where, grafana_expr(target["expr"])))
    return found


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def rule_expressions() -> list[Expression]:
    """Every alerting and recording rule's expression."""
    document = yaml.safe_load(RULES.read_text())
    return [
        Expression(
            f"{RULES.name}: {rule.get('alert') or rule.get('record')}",
            rule["expr"].strip(),
            is_alert="alert" in rule,
        )
        for group in document["groups"]
        for rule in group["rules"]
    ]


def shipped_expressions() -> list[Expression]:
    """What Grafana and Prometheus will evaluate in production."""
    return dashboard_expressions() + rule_expressions()
