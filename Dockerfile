# The operator image (python -m lft_operator). Build context: the repository root.
#
#   Ordinary way (network, python:3.11-slim):  docker build -t lft/operator:dev .
#   Offline here (debootstrap base + host wheels, no network in the build): hack/build-images.sh
#
# Only the light deps (kopf, kubernetes, pydantic, ...): no torch, and no trainer code. The
# operator and the trainer share only the API package (api/lft_api: spec, status, contract).
# ARGs: BASE_IMAGE, WHEELHOUSE (folder in the context; with wheels -> pip --no-index).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS deps
ARG WHEELHOUSE=.wheelhouse/operator
# The glob lets the wheelhouse folder be absent (then pip uses the index).
COPY operator/requirements.txt ${WHEELHOUSE}* /tmp/wheelhouse/
RUN set -eu; \
    python3 -m venv /opt/venv; \
    pip="/opt/venv/bin/pip --disable-pip-version-check --no-cache-dir install"; \
    # From the index, an old pip (Debian's 23.0) backtracks for many minutes on this set.
    upgrade_pip() { $pip --upgrade "pip>=25"; }; \
    cd /tmp/wheelhouse; \
    if ls ./*.whl >/dev/null 2>&1; then \
        echo "deps: offline from the wheelhouse ($(ls ./*.whl | wc -l) wheels)"; \
        lock=; [ -f requirements.lock ] && lock="-c requirements.lock"; \
        $pip --no-index --find-links . -r requirements.txt $lock; \
    else \
        echo "deps: from the index"; \
        upgrade_pip; $pip -r requirements.txt; \
    fi; \
    # Sources are not pip-installed (no build backend offline): a .pth file finds them.
    echo /opt/lft/src > "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/lft.pth"; \
    rm -rf /tmp/wheelhouse

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --gid 1000 lft \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/lft --shell /usr/sbin/nologin lft
COPY --from=deps /opt/venv /opt/venv
COPY api/lft_api /opt/lft/src/lft_api
COPY operator/lft_operator /opt/lft/src/lft_operator
# Byte-compile as root (the non-root user cannot write __pycache__), and fail the build
# early if the shared spec does not import without the ML stack.
RUN python -m compileall -q /opt/lft/src && python -c "import kopf, lft_api.resource, lft_operator.handlers" \
    && ! python -c "import lft_trainer" 2>/dev/null
WORKDIR /home/lft
LABEL org.opencontainers.image.title="lft-operator"
USER 1000:1000
ENTRYPOINT ["python", "-m", "lft_operator"]
