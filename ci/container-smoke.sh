#!/usr/bin/env bash
# Container smoke test: build the image with podman and run the README's docker and apptainer
# command forms offline (--network=none) on a small simulated trial, then compare every TSV/JSON
# with a pip (non-container) run of the same commands: numbers must be identical.
#
#   ci/container-smoke.sh            (as root, on Debian; CI runs it from .ci/run)
#
# No Docker Hub here: the base image is a Debian bookworm (mmdebstrap) stand-in for
# python:3.11-slim (ci/make-base-rootfs.sh), cached under $PTSD_CI_CACHE with podman's storage,
# so a second call in the same run (or on the same machine) reuses it and the build layers.
# Podman is configured through CONTAINERS_CONF / CONTAINERS_STORAGE_CONF (ci/podman-env.sh).
#   ci/container-smoke.sh --build-only   the base and the image only (.ci/run starts this in the
#                                        background before `make test`; the full call then finds
#                                        both in the cache)
# Env: PYTHON (the pip run's interpreter, default .venv/bin/python), PTSD_CI_CACHE, SMOKE_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
BUILD_ONLY=0
if [ "${1:-}" = --build-only ]; then BUILD_ONLY=1; fi
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
BASE=localhost/ptsd-ci-base:bookworm
IMAGE=localhost/ptsd_bidsapp:ci
RUN_UID=4242  # an arbitrary uid with no passwd entry in the image, as on a cluster
t0=$SECONDS
step() { echo "== [$((SECONDS - t0)) s] $*"; }

step "podman, runc, mmdebstrap"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v mmdebstrap >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends podman runc mmdebstrap uidmap >/dev/null
fi
. ci/podman-env.sh

step "stand-in base image $BASE"
ci/make-base-rootfs.sh "$PTSD_CI_CACHE" "$BASE"

step "podman build $IMAGE"
nice -n 10 podman build --quiet --network=host --build-arg BASE_IMAGE="$BASE" --build-arg PREFETCH_TEMPLATES=0 \
    -t "$IMAGE" . > "$PTSD_CI_CACHE/build.log" 2>&1 || { tail -40 "$PTSD_CI_CACHE/build.log"; exit 1; }
podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "image size %.0f MB\n", $1 / 1e6}'
if [ "$BUILD_ONLY" = 1 ]; then
    step "image built"
    exit 0
fi
SMOKE_DIR=${SMOKE_DIR:-$(mktemp -d /var/tmp/ptsd_bidsapp-smoke.XXXXXX)}

step "simulated trial (4 subjects) in $SMOKE_DIR"
"$PYTHON" -m ptsd_bidsapp.simulate.cli "$SMOKE_DIR/bids" --n-subjects 4 --seed 11 --resolution 8 --n-volumes 80 --quiet
# 4 subjects: models allowed from 3; the Δdepression covariate left out (with 4 subjects the
# nested LOO of that model stops on a singular matrix, the same in and out of the container)
cat > "$SMOKE_DIR/group.yml" <<YML
elastic_net:
  min_subjects: 3
  n_permutations: 19
  n_bootstrap: 10
  models:
    depression_covariate: {covariates: []}
peb:
  n_permutations: 19
YML
chmod -R a+rX "$SMOKE_DIR/bids" "$SMOKE_DIR/group.yml"
mkdir -p "$SMOKE_DIR/container/data/out" "$SMOKE_DIR/container/scratch/work"
mv "$SMOKE_DIR/bids" "$SMOKE_DIR/container/data/bids"
chown -R "$RUN_UID:$RUN_UID" "$SMOKE_DIR/container/data/out" "$SMOKE_DIR/container/scratch"
DATA=$SMOKE_DIR/container/data

# The README's docker commands (podman is CLI-compatible), with the --user it recommends.
docker_run() {
    nice -n 10 podman run --rm --network=none --user "$RUN_UID:$RUN_UID" \
        -v "$DATA/bids:/bids:ro" -v "$DATA/out:/out" -v "$SMOKE_DIR/group.yml:/config/group.yml:ro" \
        "$IMAGE" "$@"
}
step "container: participant (docker form: sub-01 sub-02, default work dir, offline)"
docker_run /bids /out participant --participant-label 01 02 --nprocs 2 --seed 1 --config /config/group.yml

# The README's apptainer command: the host user, a read-only image, the data folder bound at
# the same path, -w on scratch. Apptainer is not packaged for Debian 12, so podman plays it:
# --read-only (tmpfs /tmp as Apptainer's bound /tmp) and the same bind layout.
step "container: participant (apptainer form: sub-03 sub-04, read-only image, -w /scratch/work)"
nice -n 10 podman run --rm --network=none --read-only --user "$RUN_UID:$RUN_UID" \
    -v "$DATA:$DATA" -v "$SMOKE_DIR/container/scratch:/scratch" -v "$SMOKE_DIR/group.yml:/config/group.yml:ro" \
    "$IMAGE" "$DATA/bids" "$DATA/out" participant --participant-label 03 04 -w /scratch/work --nprocs 2 --seed 1 \
    --config /config/group.yml

step "container: group (docker form)"
docker_run /bids /out group --nprocs 2 --seed 1 --config /config/group.yml
owners=$(find "$DATA/out" -not -uid "$RUN_UID" | head -3)
[ -z "$owners" ] || { echo "outputs not owned by uid $RUN_UID: $owners" >&2; exit 1; }
grep -q '"Type": "docker"' "$DATA/out/dataset_description.json" \
    || { echo "GeneratedBy does not name the container" >&2; exit 1; }

step "pip run: the same commands with $PYTHON"
PIP_DIR=$SMOKE_DIR/pip
mkdir -p "$PIP_DIR"
# the image was built without the TemplateFlow prefetch: the pip run must not see a cache either
export TEMPLATEFLOW_HOME=$PIP_DIR/no-templateflow NIPYPE_NO_ET=1
pip_app() { nice -n 10 "$PYTHON" -m ptsd_bidsapp "$DATA/bids" "$PIP_DIR/out" "$@" --nprocs 2 --seed 1 \
                --config "$SMOKE_DIR/group.yml" -w "$PIP_DIR/work"; }
pip_app participant --participant-label 01 02
pip_app participant --participant-label 03 04
pip_app group

step "compare container vs pip outputs"
"$PYTHON" ci/compare_outputs.py "$PIP_DIR/out" "$DATA/out" --path-map "$PIP_DIR/out=$DATA/out" \
    --path-map "$PIP_DIR/out=/out" --path-map "$DATA/bids=/bids" --path-map "file://$DATA/bids=file:///bids" \
    --path-map "$PIP_DIR/work=/tmp/work" --path-map "$PIP_DIR/work=/scratch/work"
step "container smoke test passed"
rm -rf "$SMOKE_DIR"
