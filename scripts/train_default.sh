#!/usr/bin/env bash
# Reproduce the embedded default model from nothing, with the project's own code:
#   shapes data (held-out pairs excluded) -> video VAE -> T5 tokenizer + encoder -> PoM DiT
#   -> its clip-start fine-tune (2 stages) -> a pipeline directory -> videogen/default_model
#   -> its fine-tune on its own streams (against long-video drift)
#   (package data, safetensors), and its 1-step student (`videogen distill`) beside it.
# Every stage resumes: rerun the script after any stop (a session's end, a crash) and it
# picks up where it was. It runs on the 2-core CPU; on a GPU machine the same commands run
# there (add train.mixed_precision=bf16 and a larger train.batch_size).
#
#   mkdir -p runs && nohup bash scripts/train_default.sh > runs/train_default.log 2>&1 &
#
# The VAE trains whole up to train.freeze_encoder_at (configs/shapes_vae.yaml); from there
# its latent space is fixed, so the DiT trains on latents cached from that export while the
# decoder alone goes on sharpening, the two side by side on one core each. The finished
# pipeline takes the final decoder (same encoder, same latent statistics).
# The tokenizer is trained on the shapes caption vocabulary and the T5 encoder is a small
# random, frozen one (built by `build_components` from configs/shapes.yaml's text section).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
FREEZE=$(python -c "from videogen.training.config import load_vae_train_config as l; print(l('configs/shapes_vae.yaml').train.freeze_encoder_at)")
VAE=runs/shapes_vae/export              # the final VAE
LATENTS=$VAE                            # the VAE whose latents the DiT learns
if [ "$FREEZE" -gt 0 ]; then LATENTS=runs/shapes_vae/export-latents; fi  # the VAE at the freeze step
DIT_ARGS=(configs/shapes.yaml "vae.pretrained=$LATENTS" "train.output_dir=runs/default")

# 0. a fresh machine: the newest checkpoints, from git (training_state/; saved with
#    `bash scripts/training_state.sh save` and committed before a session ends)
bash scripts/training_state.sh restore

# 1. data: 33-frame 64x64 clips, held-out colour-shape pairs left out
if [ ! -f data/shapes/metadata.csv ]; then
  OMP_NUM_THREADS=2 videogen data shapes --out data/shapes --num 4000 --frames 33 --size 64 --seed 0
fi

# 2. the VAE (configs/shapes_vae.yaml) up to train.freeze_encoder_at, where the latent
#    space is fixed and exported; the decoder alone trains on in step 3. (The config's
#    comments tell what two earlier runs taught: clip length, cache warm-up, the foreground
#    loss, single frames, identity temporal convs.) A phase already done is a no-op.
#    Without freeze_encoder_at the config runs whole.
vae_phase() { OMP_NUM_THREADS=2 videogen train-vae configs/shapes_vae.yaml "$@" --resume latest; }
if [ ! -f "$LATENTS/config.json" ]; then
  if [ "$FREEZE" -gt 0 ]; then
    vae_phase "train.stop_at_step=$FREEZE" train.eval_long_clips=0
    videogen train-vae configs/shapes_vae.yaml --resume "$(printf 'runs/shapes_vae/checkpoint-%06d' "$FREEZE")" \
      --export "$LATENTS"
  else
    OMP_NUM_THREADS=2 bash scripts/train_vae.sh
  fi
fi

# 3. side by side on one core each: the decoder (resumes; renders its clips on the fly;
#    exports $VAE when done) and the DiT's side: its data cached once per machine (VAE
#    latents + text embeddings; ~27 min on one core for 4000 clips, on both when the
#    decoder is done), then the PoM DiT (resumes). A decoder already running (this script
#    restarted beside it) is left alone.
decoder_running() { pgrep -f "train-vae configs/shapes_vae.yaml" > /dev/null; }
if [ ! -f "$VAE/config.json" ] && ! decoder_running; then
  OMP_NUM_THREADS=1 bash scripts/train_vae.sh >> runs/shapes_vae/decoder.log 2>&1 &
  DECODER=$!
fi
if [ ! -f cache/shapes/index.json ]; then
  if decoder_running; then CACHE_WORKERS=1; else CACHE_WORKERS=2; fi
  OMP_NUM_THREADS=1 videogen cache "${DIT_ARGS[@]}" --workers "$CACHE_WORKERS"
fi
# one core while the decoder has the other, both once it is done (read at start-up: a DiT
# started beside the decoder keeps one thread until this script is rerun)
if decoder_running; then DIT_THREADS=1; else DIT_THREADS=2; fi
OMP_NUM_THREADS=$DIT_THREADS videogen train "${DIT_ARGS[@]}" --resume latest
if [ -n "${DECODER:-}" ]; then wait "$DECODER"; fi

# 3b. the clip-start fine-tune, in two stages, each from the pipeline the one before wrote
#     (its config tells why): configs/shapes_start.yaml (from runs/default/pipeline:
#     frame-position embeddings added, the first two latent frames of every clip,
#     teacher-forced), then configs/shapes_whole.yaml (600 steps on whole clips, which bring
#     back the later frames that the first stage alone breaks). Each has its own latent
#     cache: the fingerprint names the pipeline the latents come from.
finetune() {  # CONFIG: cache once (into its data.cache_dir), then train (resumes)
  local cache
  cache=$(python -c "from videogen.training.config import load_config as l; print(l('$1').data.cache_dir)")
  if [ ! -f "$cache/index.json" ]; then OMP_NUM_THREADS=1 videogen cache "$1" --workers 2; fi
  OMP_NUM_THREADS=2 videogen train "$1" --resume latest
}
finetune configs/shapes_start.yaml
finetune configs/shapes_whole.yaml

# 4. ship: the EMA pipeline with the final VAE becomes package data (and runs/teacher)
bash scripts/ship_default.sh teacher
# 4b. against long-video drift: configs/shapes_rollout.yaml fine-tunes runs/teacher on its
#     own streams (97-frame clips, the first 2 latent frames primed, the other 23 streamed
#     by the model, the clip's true frames learnt after them, the clip start trained alone
#     beside it; 150 steps), and its
#     transformer replaces the shipped one
if [ ! -f data/shapes_long/metadata.csv ]; then
  OMP_NUM_THREADS=2 videogen data shapes --out data/shapes_long --num 600 --frames 97 --size 64 --seed 7
fi
finetune configs/shapes_rollout.yaml
bash scripts/ship_default.sh rollout

# 5. the few-step student (configs/shapes_distill.yaml: 1 step, 2 for the first latent
#    frame, no CFG, trained on its own streaming rollouts against the teacher's samples;
#    resumes), shipped beside it as --model default-fast
#    (three stages, the config's comments tell why; each resumes, a finished one is a no-op)
distill() { OMP_NUM_THREADS=2 videogen distill shapes_distill "$@" --resume latest; }
if [ ! -d runs/distill/checkpoint-000160 ]; then distill; fi
if [ ! -d runs/distill/checkpoint-000230 ]; then
  distill train.max_steps=230 distill.rollout_frames=8 distill.first_frame_steps=2
fi
distill train.max_steps=400 train.stop_at_step=250 train.ema_decay=0.9 distill.rollout_frames=16 distill.first_frame_steps=2
videogen distill shapes_distill distill.first_frame_steps=2 --resume runs/distill/checkpoint-000250 \
  --export runs/distill/pipeline
bash scripts/ship_default.sh student
