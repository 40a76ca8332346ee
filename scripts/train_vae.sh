#!/usr/bin/env bash
# Train the shapes VAE of the embedded default model; safe to rerun: it resumes.
#   mkdir -p runs/shapes_vae && nohup bash scripts/train_vae.sh > runs/shapes_vae/train.log 2>&1 &
# Extra key=value overrides pass through, e.g. `bash scripts/train_vae.sh train.max_steps=8000`.
# Writes runs/shapes_vae/{log.jsonl,eval.json,checkpoint-*}, exports the VAE to
# runs/shapes_vae/export, and its report to benchmarks/results/vae_shapes.{json,png}.
# Export mid-run from the newest checkpoint (the run keeps going):
#   videogen train-vae configs/shapes_vae.yaml --export runs/shapes_vae/export-now
set -euo pipefail
cd "$(dirname "$0")/.."
# Two threads, and OpenMP threads that sleep rather than spin while they wait: on the
# shared 2-core dev machine, spinning threads made a step 10x slower (66 s vs 5 s).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
mkdir -p runs/shapes_vae
videogen train-vae configs/shapes_vae.yaml "$@" --resume latest
if [ -f runs/shapes_vae/export/config.json ]; then  # not after a train.stop_at_step stop
  python -c "from videogen.training.vae_eval import write_report; \
write_report('runs/shapes_vae', 'runs/shapes_vae/export', 'benchmarks/results/vae_shapes')"
  echo "done: runs/shapes_vae/export, benchmarks/results/vae_shapes.json"
fi
