#!/usr/bin/env bash
# One GPU lease (the device tool's H200, one call of under 10 minutes), prepared on CPU and run once:
#   - continues the faces128 GAN run from its committed state (issue #14; data re-rendered there on 12 processes),
#   - runs the supervised label-efficiency entries still missing (issue #15) as parallel processes on the same GPU,
# and at DEADLINE seconds stops both (the GAN with SIGINT, which writes its checkpoint; unfinished supervised runs
# are lost, finished ones are in the results file) and packs under $OUT: lease.log, results.tgz (results file, logs,
# the GAN log and last sample grid) and the GAN checkpoint split into 15 MiB pieces (ckpt.part-NN).
# Usage, in the repository root: bash training/gpu_lease.sh [DEADLINE=480] [JOBS-FILE=training/gpu_lease_jobs.txt]
# GAN_SPEED=1 first times the GAN step on the GPU (benchmarks/gan_speed.py --device cuda: batch, loss reads,
# torch.compile; at most 240 s of the deadline) and returns BENCHMARKS.md with its section "gan-speed-gpu".
set -uo pipefail
deadline=${1:-480}
jobs_file=${2:-training/gpu_lease_jobs.txt}
OUT=${OUT:-/tmp/gpu_lease_out}
mkdir -p "$OUT" runs/lease-logs
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$OUT/lease.log"; }
say "start; $(python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no cuda")' 2>&1)"
if [ "${GAN_SPEED:-0}" = 1 ]; then
  timeout 240 python3 benchmarks/gan_speed.py --device cuda --rounds 5 > "$OUT/gan_speed.log" 2>&1
  say "gan_speed exit $?"; cp BENCHMARKS.md "$OUT/"
fi

# GAN: render the data (12 processes), then resume; rare checkpoints (each one is 37 MB), 3 loader workers
have=$(find runs/aligned128-data/images -name '*.png' 2>/dev/null | wc -l)
( { [ "$have" -ge 20000 ] || python3 -m partseg.cli data synth --mode aligned --n 20000 --size 128 --seed 0 \
      --out runs/aligned128-data --workers 12; } && exec bash training/faces128/resume.sh --workers 3 --ckpt-kimg 100
) > runs/lease-logs/gan.log 2>&1 &
gan=$!

# supervised: the test sets once, then one niced process per line of the jobs file
OMP_NUM_THREADS=1 python3 benchmarks/label_efficiency.py --part supervised --prepare >> "$OUT/lease.log" 2>&1
say "test sets cached"
sup=()
i=0
while read -r args; do
  [ -z "$args" ] || [ "${args:0:1}" = "#" ] && continue
  i=$((i + 1))
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 nice -n 10 python3 -u benchmarks/label_efficiency.py --part supervised $args \
    > "runs/lease-logs/sup-$i.log" 2>&1 &
  sup+=($!)
  say "job $i (pid $!): $args"
done < "$jobs_file"

running() { local n=0; for p in "${sup[@]}"; do kill -0 "$p" 2>/dev/null && n=$((n + 1)); done; echo $n; }
while [ $(( $(date +%s) - t0 )) -lt "$deadline" ] && [ "$(running)" -gt 0 ]; do sleep 5; done
say "supervised jobs still running: $(running); stopping"
for p in "${sup[@]}"; do kill -TERM "$p" 2>/dev/null; done
while [ $(( $(date +%s) - t0 )) -lt "$deadline" ] && kill -0 $gan 2>/dev/null; do sleep 5; done
kill -INT $gan 2>/dev/null
for _ in $(seq 60); do  # bounded: a process that does not stop must not cost the packing below
  alive=0; for p in $gan "${sup[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break; sleep 1
done
kill -9 $gan "${sup[@]}" 2>/dev/null
say "GAN stopped: $(tail -c 400 runs/lease-logs/gan.log | tr '\r' '\n' | tail -3)"

grid=$(ls runs/faces128/grid-step*.png 2>/dev/null | tail -1)
tar czf "$OUT/results.tgz" benchmarks/results/label_efficiency2_supervised.json runs/lease-logs \
  runs/faces128/log.jsonl runs/faces128/config.json ${grid:+"$grid"} 2>> "$OUT/lease.log"
if [ -f runs/faces128/checkpoint.pt ]; then
  split -b 15m -d runs/faces128/checkpoint.pt "$OUT/ckpt.part-"
  say "checkpoint $(sha256sum runs/faces128/checkpoint.pt | cut -c1-16) split: $(ls "$OUT" | tr '\n' ' ')"
fi
say "done"
