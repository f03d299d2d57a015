#!/bin/bash
# Re-creates the captured outputs in this directory from a real Slurm (scripts/infra/slurm-up.sh).
# Run as root from anywhere: bash tests/data/slurm/capture.sh  (takes ~100 s: one job times out).
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/ccd-capture.XXXXXX)
cd "$work"
SQ='JobID:|,State:|,Reason:|,exit_code:|,Name:|'
SA='JobID,JobName,State,ExitCode,Reason'
sub() { sbatch --parsable -o "$work/%j.out" "$@"; }

ok=$(sub -J 'ccd:cap:ok:1' --wrap 'sleep 2; echo hi')
fail=$(sub -J 'ccd:cap:fail:1' --wrap 'sleep 2; exit 3')
sig=$(sub -J 'ccd:cap:sig:1' --wrap 'sleep 2; kill -9 $$')
big=$(sub -J 'ccd:cap:big:1' -c 2 --wrap 'sleep 8')
res=$(sub -J 'ccd:cap:res:1' -c 2 --wrap 'sleep 1')
held=$(sub -J 'ccd:cap:held:1' -H --wrap 'true')
run=$(sub -J 'ccd:cap:run:1' --wrap 'sleep 300')
tmo=$(sub -J 'ccd:cap:timeout:1' -t 1 --wrap 'sleep 300')
heldc=$(sub -J 'ccd:cap:heldcancel:1' -H --wrap 'true')
sbatch --parsable -J 'ccd:cap:parsable:1' -H --wrap true > "$out/sbatch_parsable.txt"
scancel "$(cat "$out/sbatch_parsable.txt")"
ids="$ok,$fail,$sig,$big,$res,$held,$run,$tmo,$heldc"
sleep 0.5
squeue -h -t all -j "$ids" -O "$SQ" > "$out/squeue_submitted.txt"
sleep 3
squeue -h -t all -j "$ids" -O "$SQ" > "$out/squeue_mixed.txt"
scancel "$run" "$heldc"
sleep 1
squeue -h -t all -j "$ids" -O "$SQ" > "$out/squeue_cancelled.txt"
# Wait for the walltime kill (~85 s after start with the 30 s default OverTimeLimit slack).
while [ "$(squeue -h -j "$tmo" -t all -o %T)" != TIMEOUT ]; do sleep 2; done
scancel "$held"
sleep 2
squeue -h -t all -j "$ids" -O "$SQ" > "$out/squeue_final.txt"
sleep 2
sacct -X -n -P -j "$ids" -o "$SA" > "$out/sacct_final.txt"
sacct -n -P -j "$ids" -o "$SA" > "$out/sacct_with_steps.txt"
squeue -h -t all --name='ccd:cap:ok:1,ccd:cap:run:1,ccd:cap:none:1' -O "$SQ" > "$out/squeue_by_name.txt"
( squeue -h -t all -j 999999 -O "$SQ" 2>&1 || true ) > "$out/squeue_invalid_id.txt"
scontrol show partition -o > "$out/scontrol_partition.txt"
sinfo -h -N -o '%N|%c|%m|%G|%P' > "$out/sinfo_nodes.txt"
sdiag > "$out/sdiag.txt"
echo "ids $ids" > "$out/ids.txt"
rm -rf "$work"
