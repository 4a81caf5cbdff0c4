# spotshift workload image: one image, two entrypoints (`api` by default, `worker`).
# Build from the repository root: docker build -t spotshift .

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"
# pyproject's package discovery includes migration/ and infra/, and its readme field needs README.md.
COPY pyproject.toml README.md ./
COPY app ./app
COPY migration ./migration
COPY infra ./infra
# No extras: the workload set only. Pulumi and its providers (the `infra` extra, ~700 MiB)
# stay out of the image every Spot VM pulls; app.workload_guard refuses them at run time.
# pip (and setuptools, where the base's venv has it) is dropped afterwards: nothing installs at run time.
RUN pip install --no-cache-dir . \
    && python -m pip uninstall --yes --quiet pip setuptools

FROM ${PYTHON_IMAGE}
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 spotshift \
    && useradd --system --uid 10001 --gid spotshift --create-home --home-dir /home/spotshift \
       --shell /usr/sbin/nologin spotshift
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/spotshift
EXPOSE 8080
# No HEALTHCHECK here: the same image runs the worker, which serves no HTTP.
# The API's health is /healthz (liveness) and /readyz (storage reachable).
STOPSIGNAL SIGTERM
ENTRYPOINT ["spotshift"]
CMD ["api", "--host", "0.0.0.0", "--port", "8080"]
