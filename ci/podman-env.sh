# Source me: podman configured through CONTAINERS_CONF / CONTAINERS_STORAGE_CONF files under
# $PTSD_CI_CACHE (no /etc edits). Settings that a root CI sandbox without systemd needs:
# runc (crun fails there: "cgroups in hybrid mode not supported"), cgroupfs, file events,
# ulimits a sandbox can grant. Images live in $PTSD_CI_CACHE/containers so a later step of
# the same run (or a rerun on the same machine) reuses the base image and build layers.
: "${PTSD_CI_CACHE:=/var/tmp/ptsd_bidsapp-ci}"
mkdir -p "$PTSD_CI_CACHE/containers/storage" "$PTSD_CI_CACHE/containers/run"
cat > "$PTSD_CI_CACHE/containers/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$PTSD_CI_CACHE/containers/events.log"
CONF
cat > "$PTSD_CI_CACHE/containers/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$PTSD_CI_CACHE/containers/storage"
runroot = "$PTSD_CI_CACHE/containers/run"
CONF
export PTSD_CI_CACHE
export CONTAINERS_CONF="$PTSD_CI_CACHE/containers/containers.conf"
export CONTAINERS_STORAGE_CONF="$PTSD_CI_CACHE/containers/storage.conf"
