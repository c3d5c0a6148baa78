# ptsd_bidsapp container: same install steps as the README (`make install`).
FROM python:3.11-slim

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    PTSD_BIDSAPP_DOCKER=1 \
    TEMPLATEFLOW_HOME=/opt/templateflow

RUN apt-get update \
    && apt-get install -y --no-install-recommends make git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . /src
RUN python -m pip install --upgrade pip \
    && python -m pip install ".[atlas]" \
    && python -m pip install bids-validator-deno "templateflow>=24.0"

# Pre-fetch the TemplateFlow files the app uses so the image runs offline
# (at run time the app never downloads nor imports templateflow, it reads the cache;
# see ptsd_bidsapp/templates.py). templateflow is installed above for this step only.
RUN python -c "from templateflow import api; \
[api.get('MNI152NLin2009cAsym', resolution=r, desc='brain', suffix='mask') for r in (1, 2)]; \
api.get('MNI152NLin2009cAsym', resolution=2, desc=None, suffix='T1w')" \
    && chmod -R a+rX /opt/templateflow

RUN useradd --create-home --uid 1000 ptsd
USER ptsd
ENV HOME=/home/ptsd TEMPLATEFLOW_AUTOUPDATE=0
WORKDIR /home/ptsd

ENTRYPOINT ["ptsd_bidsapp"]
