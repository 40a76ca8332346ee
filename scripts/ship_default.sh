#!/usr/bin/env bash
# Assemble videogen/default_model (package data) from the runs of scripts/train_default.sh:
# the DiT's EMA pipeline after its clip-start fine-tune, with the VAE swapped for the final
# one (same encoder, so the same latent space; a decoder trained longer).
#   bash scripts/ship_default.sh            # finished runs: runs/default_whole/pipeline + runs/shapes_vae/export
#   bash scripts/ship_default.sh --latest   # runs still going: export their newest checkpoints first
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
FREEZE=$(python -c "from videogen.training.config import load_vae_train_config as l; print(l('configs/shapes_vae.yaml').train.freeze_encoder_at)")
PIPE=runs/default_whole/pipeline
VAE=runs/shapes_vae/export
LATENTS=$VAE  # the VAE the DiT was trained with (as in train_default.sh)
if [ "$FREEZE" -gt 0 ]; then LATENTS=runs/shapes_vae/export-latents; fi
if [ "${1:-}" = "--latest" ]; then
  PIPE=runs/default_whole/export-now
  VAE=runs/shapes_vae/export-now
  videogen train configs/shapes_whole.yaml --export "$PIPE"
  videogen train-vae configs/shapes_vae.yaml --export "$VAE"
fi
for need in "$PIPE/model_index.json" "$VAE/config.json"; do
  [ -f "$need" ] || { echo "ship_default: $need missing; run scripts/train_default.sh (or pass --latest)" >&2; exit 2; }
done
python - "$LATENTS" "$VAE" <<'PY'
import json, sys
a, b = (json.load(open(f"{d}/config.json")) for d in sys.argv[1:])
if a["latents_mean"] != b["latents_mean"] or a["latents_std"] != b["latents_std"]:
    sys.exit("ship_default: the final VAE's latent statistics differ from the DiT's: its encoder was not frozen")
PY
rm -rf videogen/default_model.tmp
cp -r "$PIPE" videogen/default_model.tmp
rm -rf videogen/default_model.tmp/vae && cp -r "$VAE" videogen/default_model.tmp/vae
rm -f videogen/default_model.tmp/vae/eval.json
rm -rf videogen/default_model && mv videogen/default_model.tmp videogen/default_model
du -sh videogen/default_model
echo "default model written to videogen/default_model"
