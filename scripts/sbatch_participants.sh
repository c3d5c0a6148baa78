#!/bin/bash
#SBATCH --job-name=ptsd_bidsapp
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=04:00:00
# One participant-level job per subject: array task i runs the i-th subject of participants.tsv.
#
#   sbatch --array=1-21 scripts/sbatch_participants.sh /data/bids /data/out /scratch/$USER/ptsd_work [app options]
#   sbatch --dependency=afterok:<array job id> --cpus-per-task=2 --wrap \
#       "apptainer run -B /data ptsd_bidsapp.sif /data/bids /data/out group --nprocs 2"
#
# The app is run as $PTSD_BIDSAPP says: by default the Apptainer image ./ptsd_bidsapp.sif with the
# three folders bound; PTSD_BIDSAPP=ptsd_bidsapp for a pip install the compute nodes can see.
# Each subject gets its own work dir (WORK/sub-<label>), so a failed subject is rerun alone
# (`sbatch --array=<i> ...`) and resumes from its cached steps.
set -euo pipefail
BIDS=$1 OUT=$2 WORK=$3
shift 3
APP=${PTSD_BIDSAPP:-"apptainer run -B $BIDS -B $OUT -B $WORK ptsd_bidsapp.sif"}
subject=$(awk -F'\t' -v row=$((SLURM_ARRAY_TASK_ID + 1)) 'NR == row {print $1}' "$BIDS/participants.tsv")
if [ -z "$subject" ]; then
    echo "array task $SLURM_ARRAY_TASK_ID: $BIDS/participants.tsv has no row $((SLURM_ARRAY_TASK_ID + 1))" >&2
    exit 66
fi
mkdir -p "$WORK"
# shellcheck disable=SC2086  # APP is a command line
exec $APP "$BIDS" "$OUT" participant --participant-label "${subject#sub-}" -w "$WORK/$subject" \
    --nprocs "${SLURM_CPUS_PER_TASK:-1}" "$@"
