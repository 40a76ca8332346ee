#!/usr/bin/env bash
# Carry the default model's training across machines through git: runs/ is not tracked and
# a fresh machine (a new session, a CI box, a user's clone) starts without it.
#   bash scripts/training_state.sh save      # newest complete checkpoint of each run -> training_state/
#   bash scripts/training_state.sh restore   # training_state/ -> runs/, where runs/ has no checkpoint yet
# `save` keeps one checkpoint per run (the newest; the previous one is replaced) with the
# run's log.jsonl and eval.json, the VAE export the DiT's latents come from and the DiT's
# checkpoint scores (benchmarks/default_training.py --score). A finished run whose export
# is written (the VAE: runs/shapes_vae/export) travels as that export, without a
# checkpoint: nothing is left to train, and train_default.sh then skips it. Commit
# training_state/ afterwards. `restore` never overwrites a run that has a checkpoint: the
# newer state on this machine wins. scripts/train_default.sh restores on its own.
# The data and the DiT's latent cache are not carried: both are rebuilt from seeds.
# Checkpoints travel packed (scripts/pack_checkpoint.py): tensors in safetensors only, the
# optimizer's moments in bfloat16, 46 MB for the DiT instead of 63. Save once a session,
# at its end: the commits of one session have a size limit, and each save replaces the
# last one's files.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=(shapes_vae default default_start default_whole)
# the frozen-encoder VAE (the DiT's latent space), the finished VAE, the scores of DiT
# checkpoints so far
EXTRA=(shapes_vae/export-latents shapes_vae/export default/quick default_start/quick)

newest() {  # the newest complete checkpoint directory of a run, or nothing
  for d in "$1"/checkpoint-[0-9]*; do
    if [ -f "$d/trainer_state.json" ]; then echo "$d"; fi
  done | sort | tail -n 1
}

case "${1:-}" in
  save)
    for run in "${RUNS[@]}"; do
      ckpt=$(newest "runs/$run")
      [ -n "$ckpt" ] || continue
      dst=training_state/$run
      rm -rf "$dst.tmp" && mkdir -p "$dst.tmp"
      if [ -f "runs/$run/export/config.json" ]; then
        ckpt="(finished: its export)"
      else
        cp -r "$ckpt" "$dst.tmp/"
        python scripts/pack_checkpoint.py pack "$dst.tmp/$(basename "$ckpt")" > /dev/null
      fi
      for f in log.jsonl eval.json; do
        if [ -f "runs/$run/$f" ]; then cp "runs/$run/$f" "$dst.tmp/"; fi
      done
      rm -rf "$dst" && mv "$dst.tmp" "$dst"
      echo "saved $ckpt -> $dst"
    done
    for extra in "${EXTRA[@]}"; do
      if [ -d "runs/$extra" ]; then
        rm -rf "training_state/$extra" && cp -r "runs/$extra" "training_state/$extra"
        echo "saved runs/$extra"
      fi
    done
    du -sh training_state 2>/dev/null || echo "nothing to save: no complete checkpoint in runs/" ;;
  restore)
    for run in "${RUNS[@]}"; do
      src=training_state/$run
      # nothing saved, or this machine's run is as new or newer: keep it
      if [ ! -f "$src/log.jsonl" ] && [ -z "$(newest "$src")" ]; then continue; fi
      if [ -n "$(newest "runs/$run")" ] || [ -f "runs/$run/log.jsonl" ]; then continue; fi
      mkdir -p "runs/$run"
      for f in "$src"/*; do
        case "$(basename "$f")" in
          checkpoint-*|log.jsonl|eval.json) cp -r "$f" "runs/$run/" ;;
        esac
      done
      if [ -n "$(newest "runs/$run")" ]; then
        python scripts/pack_checkpoint.py unpack "$(newest "runs/$run")" > /dev/null
      fi
      echo "restored runs/$run $(basename "$(newest "runs/$run")")"
    done
    for extra in "${EXTRA[@]}"; do
      if [ -d "training_state/$extra" ] && [ ! -e "runs/$extra" ]; then
        mkdir -p "runs/$(dirname "$extra")" && cp -r "training_state/$extra" "runs/$extra"
        echo "restored runs/$extra"
      fi
    done ;;
  *) echo "usage: bash scripts/training_state.sh save|restore" >&2; exit 2 ;;
esac
