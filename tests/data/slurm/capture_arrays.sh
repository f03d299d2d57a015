#!/bin/bash
# Re-creates the job-array and usage captures in this directory from a real Slurm
# (scripts/infra/slurm-up.sh). Run as root: bash tests/data/slurm/capture_arrays.sh (~20 s).
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/ccd-capture.XXXXXX)
cd "$work"
SQ='JobID:|,State:|,Reason:|,exit_code:|,Name:|,ArrayJobID:|,ArrayTaskID:|'
SA='JobID,JobName,State,ExitCode,Reason,TotalCPU,MaxRSS,Elapsed,ReqMem,AllocCPUS,Timelimit'
cat > array.sbatch <<'EOS'
#!/bin/sh
#SBATCH --job-name=ccd:cap:@arr
#SBATCH --array=0-5%2
#SBATCH --acctg-freq=task=1
#SBATCH --time=10
case $SLURM_ARRAY_TASK_ID in
    0) exit 0 ;;
    1) python3 -c 'x = bytearray(200 << 20); import time; t = time.time()
while time.time() - t < 2.5: pass' ;;
    2) exit 3 ;;
    *) sleep 2 ;;
esac
EOS
arr=$(sbatch --parsable -o "$work/%a.out" array.sbatch)
one=$(sbatch --parsable -J 'ccd:cap:single:1' -c 2 --mem=300M -o "$work/%j.out" --wrap 'sleep 1')
sleep 0.5
squeue -h -r -t all -j "$arr,$one" -O "$SQ" > "$out/squeue_array_pending.txt"
scancel "${arr}_5"
while squeue -h -j "$arr,$one" -o %i | grep -q .; do sleep 1; done
sleep 2
squeue -h -r -t all -j "$arr,$one" -O "$SQ" > "$out/squeue_array_final.txt"
squeue -h -r -t all --name='ccd:cap:@arr' -O "$SQ" > "$out/squeue_array_by_name.txt"
sacct -n -P -j "$arr,$one" -o "$SA" > "$out/sacct_usage.txt"
scontrol show config > "$out/scontrol_config.txt"
( sbatch --parsable -p no-such-partition --wrap true 2>&1 || true ) > "$out/sbatch_invalid_partition.txt"
echo "ids $arr $one" > "$out/ids_arrays.txt"
rm -rf "$work"
