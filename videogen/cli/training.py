"""The training commands: `videogen cache`, `train`, `distill`, `train-vae`."""

from __future__ import annotations

from videogen.cli.parsing import checkpoint_arguments, command, config_arguments


# -------------------------------------------------------------------------------- cache
def add_cache(sub) -> None:
    p = command(
        sub, "cache", "precompute VAE latents and text embeddings for a training config",
        """
        Encode every clip of the config's dataset with the VAE and every caption with
        the text encoder, into safetensors shards in data.cache_dir that `videogen
        train` uses when present. Clips are their first data.frames frames. A cache
        built for other data/VAE/text settings is refused; delete it to rebuild.

        examples:
          videogen cache configs/shapes.yaml --workers 2     # both cores of a 2-core CPU
          videogen cache configs/tiny.yaml data.cache_dir=cache/tiny
        """,
        _run_cache,
    )
    config_arguments(p, "training", "data.cache_dir=cache/tiny")
    p.add_argument("--workers", type=int, default=1,
                   help="CPU processes that encode clips, one thread each (default: 1). The VAE encoder "
                        "scales with processes, not threads: on 2 cores, 2 workers 1.58x, 2 threads 1.19x")


def _run_cache(args) -> None:
    from videogen.training.cache import cache_dataset

    cache_dataset(args.config, args.overrides, workers=args.workers)


# -------------------------------------------------------------------------------- train
def add_train(sub) -> None:
    p = command(
        sub, "train", "train a PoM video DiT with accelerate (1 CPU to many GPUs)",
        """
        Train from a YAML config, with key=value overrides. Runs the same on one CPU
        process or many GPUs: launch it with accelerate for more than one process.
        Writes to train.output_dir: log.jsonl, checkpoint-NNNNNN/ every
        train.checkpoint_every steps, samples/, and pipeline/ (for generate --model).

        examples:
          videogen train configs/shapes.yaml
          videogen train configs/shapes.yaml train.max_steps=2000 train.batch_size=4
          videogen train configs/shapes.yaml --resume latest
          videogen train configs/shapes.yaml --export runs/shapes/now   # newest checkpoint -> pipeline
          accelerate launch --num_processes 8 -m videogen train configs/shapes.yaml
          accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m videogen train configs/tiny.yaml
        """,
        _run_train,
    )
    config_arguments(p, "training", "train.lr=3e-4")
    checkpoint_arguments(p, "train nothing: write the pipeline of a checkpoint (--resume, default the latest) to DIR")


def _run_train(args) -> None:
    from videogen.training.dit_task import train

    train(args.config, args.overrides, resume=args.resume, export=args.export)


# ------------------------------------------------------------------------------ distill
def add_distill(sub) -> None:
    p = command(
        sub, "distill", "distil a few-step student (no CFG) from a teacher pipeline",
        """
        Train a student that needs distill.student_steps model calls per latent frame
        (default 1) plus the commit pass, without classifier-free guidance, from a
        teacher pipeline (distill.teacher). The student learns on its own streaming
        rollouts: its context is its own committed output, as at inference, and its
        target is the teacher's sample from the same noise on that context.
        Writes to train.output_dir as `videogen train` does; pipeline/ is the student.

        examples:
          videogen distill configs/shapes_distill.yaml
          videogen distill configs/shapes_distill.yaml distill.teacher=runs/default/pipeline
          videogen distill configs/shapes_distill.yaml --resume latest
          videogen distill configs/shapes_distill.yaml --export runs/distill/now
        """,
        _run_distill,
    )
    config_arguments(p, "distillation", "train.lr=5e-5")
    checkpoint_arguments(p, "train nothing: write the student pipeline of a checkpoint (--resume, default the "
                             "latest) to DIR")


def _run_distill(args) -> None:
    from videogen.training.distill_task import distill

    distill(args.config, args.overrides, resume=args.resume, export=args.export)


# ---------------------------------------------------------------------------- train-vae
def add_train_vae(sub) -> None:
    p = command(
        sub, "train-vae", "train the causal video VAE (AutoencoderKLWan) on the shapes world",
        """
        Train a diffusers AutoencoderKLWan on shapes-world clips rendered on the fly (or
        a dataset: data.dataset=DIR), evaluate reconstruction PSNR on 64 held-out clips
        (eval.json), and export it with latent statistics to train.output_dir/export.
        With --export, train nothing: export the VAE of a checkpoint to DIR.

        examples:
          videogen train-vae configs/shapes_vae.yaml
          videogen train-vae configs/shapes_vae.yaml train.lr=5e-4 data.frames=9
          videogen train-vae configs/shapes_vae.yaml --resume latest
          videogen train-vae configs/shapes_vae.yaml --export runs/shapes_vae/now
        """,
        _run_train_vae,
    )
    config_arguments(p, "VAE training", "train.lr=1e-3")
    checkpoint_arguments(p, "export the VAE of the latest (or --resume) checkpoint to DIR, without training")


def _run_train_vae(args) -> None:
    from videogen.training.vae_task import train_vae

    train_vae(args.config, args.overrides, resume=args.resume, export=args.export)
