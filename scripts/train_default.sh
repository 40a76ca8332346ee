#!/usr/bin/env bash
# Reproduce the embedded default model from nothing, with the project's own code:
#   shapes data (held-out pairs excluded) -> video VAE -> T5 tokenizer + encoder -> PoM DiT
#   -> a pipeline directory -> videogen/default_model (package data, safetensors).
# Every stage resumes: rerun the script after any stop (a session's end, a crash) and it
# picks up where it was. It runs on the 2-core CPU; on a GPU machine the same commands run
# there (add train.mixed_precision=bf16 and a larger train.batch_size).
#
#   mkdir -p runs && nohup bash scripts/train_default.sh > runs/train_default.log 2>&1 &
#
# The tokenizer is trained on the shapes caption vocabulary and the T5 encoder is a small
# random, frozen one (built by `build_components` from configs/shapes.yaml's text section).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
VAE=runs/shapes_vae/export
DIT_ARGS=(configs/shapes.yaml "vae.pretrained=$VAE" "train.output_dir=runs/default")

# 1. data: 33-frame 64x64 clips, held-out colour-shape pairs left out
if [ ! -f data/shapes/metadata.csv ]; then
  videogen data shapes --out data/shapes --num 4000 --frames 33 --size 64 --seed 0
fi

# 2. the video VAE (resumes; exports runs/shapes_vae/export when done)
if [ ! -f "$VAE/config.json" ]; then
  bash scripts/train_vae.sh
fi

# 3. VAE latents + text embeddings, once
if [ ! -d cache/shapes ]; then
  videogen cache "${DIT_ARGS[@]}"
fi

# 4. the PoM DiT (resumes from the newest checkpoint)
videogen train "${DIT_ARGS[@]}" --resume latest

# 5. ship: the EMA pipeline becomes package data
rm -rf videogen/default_model.tmp
cp -r runs/default/pipeline videogen/default_model.tmp
rm -rf videogen/default_model && mv videogen/default_model.tmp videogen/default_model
du -sh videogen/default_model
echo "default model written to videogen/default_model"
