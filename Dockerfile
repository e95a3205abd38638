# syntax=docker/dockerfile:1
# The vault-service production image: the service alone in a virtualenv, run as a fixed non-root
# user, writing only to /var/lib/vault-service (mount a volume there; the root filesystem may be
# read-only). Build: `podman build -t vault-service:0.1.0 .` (docker works alike); behind a
# TLS-intercepting proxy hand the build your CA bundle: `--secret id=ca-bundle,src=FILE`.
# See docs/kubernetes.md.

# An official slim base, pinned by version (pin its digest in your registry too). Everything
# below runs `python3` from PATH and then the virtualenv's own interpreter, so a locally built
# Debian base with python3 in /usr/bin works as well as this one with /usr/local/bin.
FROM docker.io/library/python:3.11.15-slim-bookworm AS base

FROM base AS build
WORKDIR /src
# Dependencies first, from the hashed locks alone, so their layer survives code changes.
# requirements/build.lock pins the pip and setuptools that build; runtime.lock pins exactly
# the service's runtime dependencies (scripts/lock writes both; tests/deploy/test_lock.py
# checks them against pyproject.toml). Wheels only: no compiler exists in any stage.
COPY requirements/build.lock requirements/runtime.lock requirements/
RUN --mount=type=secret,id=ca-bundle,required=false \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && python3 -m venv /opt/build-tools \
    && /opt/build-tools/bin/python -m pip install --disable-pip-version-check \
        --require-hashes --only-binary :all: -r requirements/build.lock \
    && python3 -m venv --without-pip /opt/vault-service \
    && /opt/build-tools/bin/python -m pip --python /opt/vault-service/bin/python install \
        --disable-pip-version-check --require-hashes --only-binary :all: --no-deps \
        -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY vault_service vault_service
# The project itself, built with the locked setuptools (no isolated build env to download) and
# installed without dependencies: the lock already put every one of them there.
RUN /opt/build-tools/bin/python -m pip wheel --disable-pip-version-check --no-deps \
        --no-build-isolation --no-index --wheel-dir /tmp/wheels . \
    && /opt/build-tools/bin/python -m pip --python /opt/vault-service/bin/python install \
        --disable-pip-version-check --no-deps --no-index /tmp/wheels/*.whl

FROM base AS runtime
# A fixed numeric user and group (10001), so runAsUser in the manifests, file ownership on
# volumes and this image agree; the data directory is the only place it may write.
RUN groupadd --gid 10001 vault \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin vault \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/vault-service
COPY --from=build /opt/vault-service /opt/vault-service

# Listen on every interface inside the container (the service still refuses to serve gRPC
# beyond loopback without caller identity, unless VAULT_INSECURE=1), keep SQLite in the data
# directory, and never try to write bytecode next to the read-only code.
ENV PATH=/opt/vault-service/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VAULT_GRPC_LISTEN=0.0.0.0:50051 \
    VAULT_HTTP_LISTEN=0.0.0.0:8080 \
    VAULT_DATABASE_URL=sqlite:////var/lib/vault-service/vault-service.db
WORKDIR /var/lib/vault-service
USER 10001:10001
EXPOSE 50051 8080
ENTRYPOINT ["vault-service"]
CMD ["serve"]

# Last, so a new revision or date rebuilds only this metadata, not the layers above.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="vault-service" \
      org.opencontainers.image.description="gRPC service that saves buyers' cards with Antom card vaulting" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="LicenseRef-Proprietary" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.15-slim-bookworm"
