#!/usr/bin/env bash
# Assemble videogen/default_model (package data) from the runs of scripts/train_default.sh,
# in two steps:
#   teacher: the DiT's EMA pipeline after its clip-start fine-tune, with the VAE swapped for
#            the final one (same encoder, so the same latent space; a decoder trained
#            longer) -> runs/teacher, which becomes videogen/default_model (8 steps, guidance 3)
#   rollout: the transformer of runs/default_rollout/pipeline (configs/shapes_rollout.yaml: the
#            teacher fine-tuned on its own streams against long-video drift) in place of
#            videogen/default_model's; every other part and setting stays as shipped
#   student: the transformer of runs/distill/pipeline (`videogen distill shapes_distill`: 1
#            step, 2 for the first latent frame, no CFG) beside it, in default_model/fast/
#            (`--model default-fast`). It becomes the default once it meets every bar of
#            benchmarks/default_quality.py (results/default_quality_fast.json).
#   bash scripts/ship_default.sh teacher    # finished runs: runs/default_whole/pipeline + runs/shapes_vae/export
#   bash scripts/ship_default.sh teacher --latest   # runs still going: export their newest checkpoints first
#   bash scripts/ship_default.sh rollout    # after configs/shapes_rollout.yaml
#   bash scripts/ship_default.sh student    # after the distillation
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
STAGE="${1:-}"
if [ "$STAGE" = "student" ]; then
  for need in runs/distill/pipeline/model_index.json videogen/default_model/model_index.json; do
    [ -f "$need" ] || { echo "ship_default: $need missing; run scripts/train_default.sh" >&2; exit 2; }
  done
  rm -rf videogen/default_model/fast.tmp && mkdir -p videogen/default_model/fast.tmp
  cp runs/distill/pipeline/transformer/config.json runs/distill/pipeline/transformer/diffusion_pytorch_model.safetensors \
    videogen/default_model/fast.tmp/
  python - runs/distill/pipeline/model_index.json videogen/default_model/fast.tmp/sampling.json <<'PY'
import json, sys
index = json.load(open(sys.argv[1]))
json.dump({k: index.get(k) for k in ("steps", "guidance", "context_noise", "first_steps")}, open(sys.argv[2], "w"),
          indent=2)
PY
  rm -rf videogen/default_model/fast && mv videogen/default_model/fast.tmp videogen/default_model/fast
  du -sh videogen/default_model
  echo "the few-step student written to videogen/default_model/fast (--model default-fast)"
  exit 0
fi
if [ "$STAGE" = "rollout" ]; then
  for need in runs/default_rollout/pipeline/transformer/config.json videogen/default_model/model_index.json; do
    [ -f "$need" ] || { echo "ship_default: $need missing; run scripts/train_default.sh" >&2; exit 2; }
  done
  python - runs/default_rollout/pipeline/transformer/config.json videogen/default_model/transformer/config.json <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
differ = sorted(k for k in set(a) | set(b) if not k.startswith("_") and a.get(k) != b.get(k))
if differ:
    sys.exit(f"ship_default: the rollout fine-tune is not the shipped transformer's architecture ({differ[0]})")
PY
  T=videogen/default_model/transformer
  rm -rf "$T.tmp" && mkdir -p "$T.tmp"
  cp "$T/config.json" runs/default_rollout/pipeline/transformer/diffusion_pytorch_model.safetensors "$T.tmp/"
  rm -rf "$T.old" && mv "$T" "$T.old" && mv "$T.tmp" "$T" && rm -rf "$T.old"
  du -sh videogen/default_model
  echo "the rollout fine-tune's transformer written to $T"
  exit 0
fi
[ "$STAGE" = "teacher" ] || { echo "usage: bash scripts/ship_default.sh teacher [--latest] | rollout | student" >&2; exit 2; }
FREEZE=$(python -c "from videogen.training.config import load_vae_train_config as l; print(l('configs/shapes_vae.yaml').train.freeze_encoder_at)")
PIPE=runs/default_whole/pipeline
VAE=runs/shapes_vae/export
LATENTS=$VAE  # the VAE the DiT was trained with (as in train_default.sh)
if [ "$FREEZE" -gt 0 ]; then LATENTS=runs/shapes_vae/export-latents; fi
if [ "${2:-}" = "--latest" ]; then
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
rm -rf runs/teacher.tmp
cp -r "$PIPE" runs/teacher.tmp
rm -rf runs/teacher.tmp/vae && cp -r "$VAE" runs/teacher.tmp/vae
rm -f runs/teacher.tmp/vae/eval.json
rm -rf runs/teacher && mv runs/teacher.tmp runs/teacher
rm -rf videogen/default_model.tmp
cp -r runs/teacher videogen/default_model.tmp
if [ -d videogen/default_model/fast ]; then cp -r videogen/default_model/fast videogen/default_model.tmp/fast; fi
rm -rf videogen/default_model && mv videogen/default_model.tmp videogen/default_model
du -sh videogen/default_model
echo "default model written to videogen/default_model; the teacher for videogen distill in runs/teacher"
