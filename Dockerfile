# ptsd_bidsapp container: same install steps as the README (`pip install .[atlas]`).
#
#   docker build -t ptsd_bidsapp .
#   docker build --build-arg BASE_IMAGE=registry.example.org/python:3.11-slim \
#                --build-arg PREFETCH_TEMPLATES=0 -t ptsd_bidsapp .
#
# BASE_IMAGE: any image with `python` (>= 3.11) and `pip` first on PATH that may install into
#   its environment (the official python:3.11-slim by default; CI uses a Debian bookworm stand-in
#   made with mmdebstrap, ci/make-base-rootfs.sh).
# PREFETCH_TEMPLATES=0 skips the TemplateFlow download (it needs the TemplateFlow server): the app
#   then uses the MNI152NLin2009cAsym brain mask packaged with it (ptsd_bidsapp/templates.py).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG PREFETCH_TEMPLATES=1
# The image's own name and tag, recorded in the outputs' GeneratedBy.Container: pass the -t you build with,
#   docker build --build-arg IMAGE_TAG=0.1.0 -t ptsd_bidsapp:0.1.0 .
ARG IMAGE_NAME=ptsd_bidsapp
ARG IMAGE_TAG=latest

# NIPYPE_NO_ET: no telemetry/version check over the network (the image runs offline).
# PTSD_BIDSAPP_CONTAINER_IMAGE: GeneratedBy.Container of the outputs (a pip install has none).
# PTSD_BIDSAPP_WORK_DIR: the default -w inside the container, writable by any uid (the host
#   default <output_dir>/../work would be / here); mount a folder and pass -w to keep it.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    NIPYPE_NO_ET=1 \
    PTSD_BIDSAPP_CONTAINER_IMAGE=${IMAGE_NAME}:${IMAGE_TAG} \
    PTSD_BIDSAPP_WORK_DIR=/tmp/work \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0

# Dependencies first, from setup.cfg alone, so that a code or README change rebuilds one small layer.
WORKDIR /src
COPY setup.cfg pyproject.toml /src/
RUN python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); \
print(c['options']['install_requires'] + c['options.extras_require']['atlas'])" > /tmp/requirements.txt \
    && python -m pip install -r /tmp/requirements.txt "bids-validator-deno>=2.0" \
    && rm /tmp/requirements.txt \
    && mkdir -p /opt/templateflow
COPY . /src
RUN python -m pip install --no-deps /src

# The compiled elastic-net path solver (numba): compile once at build time into a cache every uid
# may read and extend (numba falls back to ~/.cache when the image is read-only).
ENV NUMBA_CACHE_DIR=/opt/numba_cache
RUN python -c "import numpy as np; from ptsd_bidsapp.glmnet import GlmnetCV; \
GlmnetCV(solver='compiled').fit(np.random.default_rng(0).normal(size=(10, 4)), np.arange(10.0))" \
    && chmod -R a+rwX /opt/numba_cache && chmod 1777 /opt/numba_cache

# Pre-fetch the TemplateFlow files the app uses so the image runs offline (at run time the app
# never downloads nor imports templateflow, it reads the cache; see ptsd_bidsapp/templates.py).
RUN if [ "$PREFETCH_TEMPLATES" = "1" ]; then \
        python -m pip install "templateflow>=24.0" \
        && python -c "from templateflow import api; \
[api.get('MNI152NLin2009cAsym', resolution=r, desc='brain', suffix='mask') for r in (1, 2)]; \
api.get('MNI152NLin2009cAsym', resolution=2, desc=None, suffix='T1w')"; \
    fi \
    && chmod -R a+rX /opt/templateflow

# Runs as uid 1000 by default; any other uid works too (docker run --user "$(id -u):$(id -g)",
# Apptainer's host user): HOME is writable by everyone (matplotlib/nipype caches).
RUN useradd --create-home --uid 1000 ptsd && chmod 1777 /home/ptsd
USER ptsd
ENV HOME=/home/ptsd
WORKDIR /tmp

ENTRYPOINT ["ptsd_bidsapp"]
