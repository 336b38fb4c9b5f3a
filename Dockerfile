# spotq container image: the project built as a wheel, installed into a virtual environment on a slim Python.
#   docker build -t spotq:0.1.0 .      (BuildKit: Docker 23+ by default, or buildx / podman)
# Runs as the numeric non-root user 65532 and writes nothing at run time (bytecode is compiled at install), so it
# works with readOnlyRootFilesystem. ENTRYPOINT is `spotq`; the default command is queue mode (`run`).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY spotq ./spotq
# Wheels for spotq and every dependency, so the runtime stage installs offline from exactly these files.
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/spotq \
    PATH=/opt/spotq/bin:$PATH
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/spotq \
    && /opt/spotq/bin/pip install --no-index --find-links /wheels spotq \
    && /opt/spotq/bin/pip uninstall --yes pip \
    && spotq --help
LABEL org.opencontainers.image.title="spotq" \
      org.opencontainers.image.description="Spot interruption handler for Kubernetes on AWS" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["spotq"]
CMD ["run"]
