# binder-federation: one image for the router, the member agent and the dev member.
#
#   docker build -t binderfed .
#   docker run --rm -p 8080:8080 -v $PWD/my.yaml:/etc/binderfed/config.yaml:ro binderfed
#   docker run --rm binderfed agent --member NAME --namespace NS ...
#   docker run --rm -p 8585:8585 binderfed devhub --host 0.0.0.0
#
# The entrypoint is `binderfed`; the command picks serve (default), agent or devhub.
#
# No HEALTHCHECK: the same image runs three different commands and only `serve`
# answers /health, and Kubernetes ignores HEALTHCHECK anyway. The Helm chart
# (charts/binder-federation) probes the router's GET /ready for readiness (503 once
# it is shutting down) and GET /health for liveness instead; see docs/deploy.md.
#
# Pin the base by digest in your CI (e.g. with Renovate) for reproducible builds;
# the tag below pins the Python patch release and the Debian release.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# -- build: a virtualenv with the dependencies and the project --------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app

# Dependencies first, in their own layer: a source edit does not reinstall them.
# Every dependency ships wheels for linux/amd64 and linux/arm64, so no compiler is
# needed even here.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# The source tree, kept in its repository layout: federation/config.py reads
# config/schema.json from `<package>/../config`, so the project is installed in
# editable mode from /app and /app is copied as it is into the runtime stage.
COPY federation/ federation/
COPY hub/ hub/
COPY health/ health/
COPY router/ router/
COPY config/ config/
RUN pip install --no-cache-dir --no-deps -e . \
    && python -m compileall -q /app/federation /app/hub /app/health /app/router \
    && binderfed --help > /dev/null

# -- runtime: the virtualenv and the source tree, nothing else ----------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="binder-federation" \
      org.opencontainers.image.description="Launch router, member agent and dev member for a federation of BinderHubs" \
      org.opencontainers.image.licenses="BSD-3-Clause"

# A fixed numeric uid/gid so Kubernetes can check runAsNonRoot without a passwd lookup.
RUN groupadd --system --gid 10001 binderfed \
    && useradd --system --uid 10001 --gid binderfed --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin binderfed

# BINDERFED_HOST: `binderfed serve` listens on all addresses of the container (it
# overrides router.host, whose default 127.0.0.1 `docker run -p` could not reach).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BINDERFED_CONFIG=/etc/binderfed/config.yaml \
    BINDERFED_HOST=0.0.0.0

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app

WORKDIR /app
USER 10001:10001
EXPOSE 8080

ENTRYPOINT ["binderfed"]
CMD ["serve", "--config", "/etc/binderfed/config.yaml"]
