# A private Docker engine for the compose test, sourced by deploy/ci/compose-test.sh.
#
# engine_start installs Debian's docker.io (and debootstrap) when missing, records the
# host's network state, and starts dockerd on its own socket, data and exec roots with
# --iptables=false --ip-forward=false: it leaves IP forwarding, the FORWARD policy and the
# host's iptables alone (containers talk to each other on their compose bridge, tests only
# to ports published on 127.0.0.1, and image builds use the host's network).
# engine_stop stops that dockerd by its PID, then undoes what is left that it added: a
# bridge, an iptables rule or chain, a changed policy, IP forwarding, a mount. It fails
# when the host is not as it was.
#
# Needs: root, bash, apt-get (Debian bookworm), iproute2, iptables (docker.io depends on it).

CI_CACHE=${DMDESK_CI_CACHE:-/var/cache/dmdesk-ci}
ENGINE_RUN=/run/dmdesk-ci-engine
ENGINE_SOCKET=unix://$ENGINE_RUN/docker.sock
ENGINE_PID=""

die() {
  echo "compose-test: FAILED: $*" >&2
  exit 1
}

log() {
  echo "compose-test: $(date -u +%H:%M:%S) $*" >&2
}

engine_install() {
  [ "$(id -u)" = 0 ] || die "the compose test runs as root (it installs and starts dockerd)"
  command -v apt-get >/dev/null || die "apt-get not found: the engine comes from Debian's docker.io"
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v iptables-save >/dev/null || missing+=(iptables)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian"
    apt-get update -q >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
      >/dev/null || die "apt-get install ${missing[*]} failed"
  fi
  # The docker client on PATH may be newer than the engine: it negotiates the API version.
  command -v docker >/dev/null || die "no docker client after installing docker.io"
}

# The host's network state, one section per line group (compared before and after).
host_state() {
  echo "## ip_forward $(cat /proc/sys/net/ipv4/ip_forward)"
  echo "## links"
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
  for family in iptables ip6tables; do
    for table in filter nat mangle raw; do
      echo "## $family $table"
      { "$family-save" -t "$table" 2>/dev/null || true; } | { grep -v '^#' || true; } |
        sed 's/\[[0-9]*:[0-9]*\]//' | sort
    done
  done
  echo "## mounts"
  awk '{print $2}' /proc/mounts | { grep -E "^($CI_CACHE|$ENGINE_RUN)" || true; } | sort
  echo "## modules"
  { awk '{print $1}' /proc/modules 2>/dev/null || true; } |
    { grep -E '^(br_netfilter|bridge|veth|xt_|nf_nat|iptable_nat|overlay)' || true; } | sort
}

engine_start() {
  engine_install
  mkdir -p "$CI_CACHE/docker" "$ENGINE_RUN"
  if [ -S "$ENGINE_RUN/docker.sock" ] && [ -f "$ENGINE_RUN/dockerd.pid" ] &&
     kill -0 "$(cat "$ENGINE_RUN/dockerd.pid")" 2>/dev/null; then
    die "a compose test engine already runs (pid $(cat "$ENGINE_RUN/dockerd.pid")); stop it first"
  fi
  host_state >"$ENGINE_RUN/host-before"
  log "starting dockerd (data root $CI_CACHE/docker)"
  dockerd \
    --host "$ENGINE_SOCKET" \
    --data-root "$CI_CACHE/docker" \
    --exec-root "$ENGINE_RUN/exec" \
    --pidfile "$ENGINE_RUN/dockerd.pid" \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --bridge=none \
    --storage-driver overlay2 \
    >"$ENGINE_RUN/dockerd.log" 2>&1 &
  ENGINE_PID=$!
  echo "$ENGINE_PID" >"$ENGINE_RUN/dockerd.started"
  export DOCKER_HOST=$ENGINE_SOCKET
  local waited=0
  until docker version >/dev/null 2>&1; do
    kill -0 "$ENGINE_PID" 2>/dev/null || { tail -20 "$ENGINE_RUN/dockerd.log" >&2; die "dockerd exited at start (log above)"; }
    sleep 0.5
    waited=$((waited + 1))
    [ $waited -lt 120 ] || { tail -20 "$ENGINE_RUN/dockerd.log" >&2; die "dockerd not ready after 60 s"; }
  done
  log "dockerd $ENGINE_PID ready: $(docker version --format '{{.Server.Version}}')"
}

# The sorted lines of one section of a host_state file.
section() {
  sed -n "/^## $2\$/,/^## /p" "$1" | { grep -v '^##' || true; } | sort
}

# Remove what the engine added (rules, chains, links, mounts) and restore what it changed.
restore_host() {
  local before=$ENGINE_RUN/host-before after=$ENGINE_RUN/host-after
  [ -f "$before" ] || return 0
  host_state >"$after"
  if cmp -s "$before" "$after"; then
    log "host network as it was"
    return 0
  fi
  log "undoing what the engine left:"
  diff "$before" "$after" >&2 || true
  # Mounts under our roots.
  comm -13 <(section "$before" mounts) <(section "$after" mounts) | sort -r |
    while read -r mount; do umount -l "$mount" || true; done
  # Links (bridges, veths) the engine created.
  comm -13 <(section "$before" links) <(section "$after" links) |
    while read -r link; do ip link delete "$link" || true; done
  # iptables: rules added (deleted one by one), chains added, policies changed.
  local family table rule chain policy
  for family in iptables ip6tables; do
    for table in filter nat mangle raw; do
      comm -13 <(section "$before" "$family $table") <(section "$after" "$family $table") |
        { grep '^-A ' || true; } | while read -r rule; do
          eval "$family -t $table -D ${rule#-A }" || true
        done
      comm -13 <(section "$before" "$family $table") <(section "$after" "$family $table") |
        { grep '^:' || true; } | while read -r chain policy; do
          chain=${chain#:}
          section "$before" "$family $table" | grep -q "^:$chain " && continue
          "$family" -t "$table" -F "$chain" 2>/dev/null || true
          "$family" -t "$table" -X "$chain" || true
        done
      section "$before" "$family $table" | { grep '^:' || true; } | while read -r chain policy; do
        [ "$policy" = "-" ] || "$family" -t "$table" -P "${chain#:}" "$policy" || true
      done
    done
  done
  # Modules the engine loaded.
  comm -13 <(section "$before" modules) <(section "$after" modules) |
    while read -r module; do rmmod "$module" 2>/dev/null || true; done
  # IP forwarding.
  sed -n 's/^## ip_forward //p' "$before" >/proc/sys/net/ipv4/ip_forward
  host_state >"$after"
  if ! cmp -s "$before" "$after"; then
    diff "$before" "$after" >&2 || true
    echo "compose-test: the host is not as it was (difference above)" >&2
    return 1
  fi
  log "host network restored"
}

engine_stop() {
  local pid=${ENGINE_PID:-$(cat "$ENGINE_RUN/dockerd.started" 2>/dev/null || true)}
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd $pid"
    kill -TERM "$pid"
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
      sleep 0.5
      waited=$((waited + 1))
      if [ $waited -ge 60 ]; then
        log "dockerd $pid still running after 30 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
  fi
  [ -n "$pid" ] || return 0  # not started by this run
  ENGINE_PID=""
  rm -f "$ENGINE_RUN/dockerd.started"
  restore_host && rm -f "$ENGINE_RUN/host-before" "$ENGINE_RUN/host-after"
}
