"""`videogen` command line: parse, validate, call one library function per command.

Each command has an `_add_<name>` (its parser) and a `_run_<name>` (one library call); the
training commands live in cli/training.py, the shared parser parts in cli/parsing.py.
Heavy imports live inside the runners so that `videogen --help` is instant. Mistakes a
user can make raise `UsageError`; `main` prints them as one line and exits with 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from videogen.cli.parsing import FMT, Parser, SHIPPED, check_utf8, command, doc
from videogen.cli.training import add_cache, add_distill, add_train, add_train_vae
from videogen.errors import UsageError


# ----------------------------------------------------------------------------- generate
_GENERATE_DOC = doc(
    """
    Generate a video from a prompt. Latent frames are denoised one at a time; each
    finished frame is decoded and written at once, and memory does not grow with
    the number of frames.

    Continue a clip with --init-video, or start from an image with --init-image
    (frame 0): the given frames are encoded by the model's causal VAE as they are
    read and committed as context (memory stays constant in the clip's length);
    the output starts with them, then --frames new frames. Frames of another size
    are resized (short side) and centre-cropped. The VAE encodes 1+4k frames: a
    clip of 1+4k+r frames (r = 1..3) loses its last r frames (logged).

    A --prompt-schedule counts new frames. --switch recommit (the default) bounds
    how long the old prompt lingers: the last --recommit-frames latent frames are
    re-committed under the new prompt, at --recommit-noise, into a fresh state, so
    colour and shape follow within a few frames while position carries over;
    --switch swap only swaps the text context, and the old prompt can linger for
    tens of frames.

    examples:
      videogen generate "a red circle moving right" --frames 240 -o out.mp4
      videogen generate "a blue square moving up" --model ./my-pipeline --steps 8
      videogen generate "x" --prompt-schedule "0:a red circle moving right;120:a blue square moving left" -o two.mp4
      videogen generate "x" --prompt-schedule "0:a red circle;120:a blue square" --switch swap -o swap.mp4
      videogen generate "a green circle moving left" --init-video clip.mp4 --frames 64 -o more.mp4
      videogen generate "a green circle moving left" --init-video clip.mp4 --no-init-frames -o new_only.mp4
      videogen generate "a red square moving down" --init-image first.png --frames 64 -o i2v.mp4
      videogen generate "a green circle standing still" -o still.gif
    """
)


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="write a video from a text prompt, streamed frame by frame",
        formatter_class=FMT,
        description=_GENERATE_DOC,
    )
    p.add_argument("prompt", help="what the video shows, e.g. 'a red circle moving right'")
    p.add_argument("--frames", type=int, default=240, help="number of new video frames (default: 240)")
    p.add_argument("-o", "--output", default="out.mp4", help="output .mp4 or .gif (default: out.mp4)")
    p.add_argument("--model", default=None, help="pipeline directory, or default-fast (the embedded "
                   "model's 1-step distilled student); default: the embedded shapes model")
    p.add_argument("--steps", type=int, default=None, help="Euler steps per latent frame (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's; 1 disables)")
    p.add_argument("--negative-prompt", default=None, metavar="TEXT",
                   help="what guidance steers away from, for every frame (default: the empty prompt, "
                        "except where the motion begins: there, for models that name opposite words, the "
                        "prompt with its motion reversed, 'moving left' -> 'moving right', so the prompt "
                        "sets the direction rather than the seed). --negative-prompt '' turns that off")
    p.add_argument("--context-noise", type=float, default=None,
                   help="noise level, in [0, 1), at which each finished latent frame is committed as "
                        "context for the next (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same video (default: 0)")
    p.add_argument("--fps", type=int, default=None, help="frames per second of the file (default: the model's)")
    p.add_argument("--height", type=int, default=None,
                   help="frame height in pixels, a multiple of the VAE factor x patch size (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="frame width in pixels, likewise (default: the model's)")
    _add_streaming_options(p)
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, 0 (lossless) .. 51 (default: 18)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps (default: cpu)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (default: float32)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice). Small models on a busy "
                        "machine run many times faster with --threads 1")
    p.add_argument("--no-worker", action="store_true",
                   help="run in this process even when a `videogen worker` is listening")
    p.set_defaults(func=_run_generate)


def _add_streaming_options(p) -> None:
    """generate's prompt-switch and init-frame options."""
    p.add_argument("--prompt-schedule", default=None, metavar="'F:PROMPT;F:PROMPT'",
                   help="change the prompt at new frame F, e.g. '0:a red circle;120:a blue square'")
    p.add_argument("--switch", default="recommit", metavar="recommit|swap",
                   help="how a scheduled prompt change comes in (default: recommit; see above)")
    p.add_argument("--recommit-frames", type=int, default=2, metavar="K",
                   help="latent frames re-committed under the new prompt by --switch recommit (default: 2)")
    p.add_argument("--recommit-noise", type=float, default=0.9, metavar="LEVEL",
                   help="noise level, in [0, 1), of the re-committed frames: higher keeps the position "
                        "but lets colour and shape change faster (default: 0.9)")
    p.add_argument("--init-video", default=None, metavar="CLIP",
                   help="continue this video (MP4, WebM, MOV, GIF); e.g. --init-video clip.mp4")
    p.add_argument("--init-image", default=None, metavar="IMAGE",
                   help="start from this PNG or JPEG as frame 0 (not with --init-video); e.g. --init-image first.png")
    p.add_argument("--no-init-frames", action="store_true",
                   help="leave the given frames out of the output (only the new frames)")


def _run_generate(args) -> None:
    check_utf8(args, "prompt", "prompt_schedule", "negative_prompt")
    kwargs = dict(
        prompt=args.prompt, output=args.output, frames=args.frames, model=args.model,
        steps=args.steps, guidance=args.guidance, context_noise=args.context_noise, seed=args.seed, fps=args.fps,
        prompt_schedule=args.prompt_schedule, crf=args.crf, device=args.device, dtype=args.dtype,
        threads=args.threads, init_video=args.init_video, init_image=args.init_image,
        include_init_frames=not args.no_init_frames, switch=args.switch, recommit_frames=args.recommit_frames,
        recommit_noise=args.recommit_noise, height=args.height, width=args.width,
        negative_prompt=args.negative_prompt,
    )
    if not args.no_worker:
        from videogen.cli.worker import WorkerFailed, generate_on_worker

        try:
            if generate_on_worker(kwargs):
                return
        except WorkerFailed as err:
            print(f"videogen generate: {err}", file=sys.stderr)
            sys.exit(1)
    from videogen.pipelines.pipeline import generate_to_file

    generate_to_file(**kwargs)


# ------------------------------------------------------------------------------- worker
def _add_worker(sub) -> None:
    p = command(
        sub, "worker", "keep the model loaded, so each `videogen generate` starts at once",
        """
        Load a model once and serve `videogen generate` runs from it. From a fresh
        process, generate spends ~5 s importing torch, diffusers and transformers before
        its first frame; while a worker listens, generate imports none of them: it sends
        its arguments to the worker over a Unix socket (this user only), draws the
        worker's progress bar, and its first frame comes in well under a second. The
        file, its bytes and the errors are the same as without the worker; Ctrl-C in
        generate stops the run and leaves nothing at the output path. Requests run one
        at a time, in arrival order. generate --no-worker runs in its own process anyway.

        The socket is videogen-<uid>/worker.sock under $XDG_RUNTIME_DIR or the temporary
        folder ($VIDEOGEN_WORKER_SOCKET names another). It runs in the foreground:
        Ctrl-C or SIGTERM stops it.

        examples:
          videogen worker &                 # then:
          videogen generate "a red circle moving right" -o out.mp4
          videogen worker --model default-fast --idle-exit 30
        """,
        _run_worker,
    )
    p.add_argument("--model", default=None, help="pipeline directory or default-fast, loaded and warmed "
                   "before the socket opens (requests may name any other; the last two are kept); default: "
                   "the embedded shapes model")
    p.add_argument("--device", default="cpu", help="the warmed model's torch device (default: cpu)")
    p.add_argument("--dtype", default="float32", help="the warmed model's dtype (default: float32)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--idle-exit", type=float, default=0, metavar="MINUTES",
                   help="stop after this many minutes without a request (default: 0, never)")


def _run_worker(args) -> None:
    from videogen.pipelines.worker import serve_worker

    serve_worker(model=args.model, device=args.device, dtype=args.dtype, threads=args.threads,
                 idle_exit=args.idle_exit)


# --------------------------------------------------------------------------- init-model
def _add_init_model(sub) -> None:
    p = command(
        sub, "init-model", "write a randomly initialised pipeline directory from a config",
        """
        Write a complete pipeline directory (model_index.json, transformer/, vae/,
        text_encoder/, tokenizer/, scheduler/) with random weights, built from a
        training config. Useful for tests, benchmarks and as a training start.

        example:
          videogen init-model ./tiny --config tiny
        """,
        _run_init_model,
    )
    p.add_argument("dir", help="directory to write")
    p.add_argument("--config", default="tiny", help=f"YAML config file or shipped config name, {SHIPPED} (default: tiny)")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value, e.g. model.mixer=attention")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")


def _run_init_model(args) -> None:
    from videogen.training.components import init_pipeline

    init_pipeline(args.dir, config=args.config, overrides=args.overrides, seed=args.seed)


# --------------------------------------------------------------------------------- data
def _add_data(sub) -> None:
    p = sub.add_parser("data", help="make datasets (the synthetic shapes world)", formatter_class=FMT)
    dsub = p.add_subparsers(dest="data_command", metavar="KIND")
    s = command(
        dsub, "shapes", "write the synthetic shapes video-text dataset",
        """
        Write the shapes world (see shapes_world.md): one coloured shape per clip on a
        black background, moving or still, as H.264 MP4 files with metadata.csv and
        spec.json. The same seed writes the same files. Held-out colour-shape pairs
        (yellow triangle, blue circle, green square) are left out unless --holdout none.

        example:
          videogen data shapes --out data/shapes --num 2000 --frames 33 --size 64
        """,
        _run_data_shapes,
    )
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--num", type=int, required=True, help="number of clips")
    s.add_argument("--frames", type=int, default=33,
                   help="frames per clip (default: 33); training clips hold 1 + k x the VAE's temporal factor")
    s.add_argument("--size", type=int, default=64, help="canvas size in pixels (default: 64)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    s.add_argument("--holdout", choices=["default", "none"], default="default",
                   help="leave out the held-out colour-shape pairs (default) or not (none)")
    p.set_defaults(func=lambda a: p.print_help())


def _run_data_shapes(args) -> None:
    from videogen.data.shapes import write_shapes_dataset

    write_shapes_dataset(args.out, num=args.num, frames=args.frames, size=args.size,
                         seed=args.seed, holdout=args.holdout)


# --------------------------------------------------------------------------------- eval
def _add_eval(sub) -> None:
    p = command(
        sub, "eval", "score temporal consistency of videos (flicker, warping, drift, ...)",
        """
        Score videos (MP4, GIF or a directory of frames) for temporal consistency:
        flicker, warping error, motion smoothness, dynamic degree, drift, SSIM/PSNR
        between consecutive frames. With --shapes, also check a shapes-world video
        against its prompt (colour, shape, direction, presence, drift) and report
        the rates overall and on held-out colour-shape pairs, and its long-video drift
        window by window (object area, off-axis wander, colour purity, edge
        sharpness, ghosts; last window vs first) against the bars at 2,400 frames.

        inputs: a file is one video; a directory of video files gives them sorted by
        file name; a dataset directory with metadata.csv gives its videos with their
        captions as prompts; any other directory is one video stored as frames.
        prompts: --prompt applies to every video; --prompts FILE has either one prompt
        per line, line i for the i-th video in that order (name files 000.mp4,
        001.mp4, ... so sorting keeps the order), or 'name<TAB>prompt' lines matched
        by file name, with or without extension. Unreadable videos are reported and
        skipped; the others are still scored, and the exit status is then 2.

        examples:
          videogen eval out.mp4 --plot out.png
          videogen eval a.mp4 b.mp4 --compare --json report.json --plot curves.png
          videogen eval videos/ --shapes --prompts data/prompts_shapes.txt --json shapes.json
          videogen eval data/shapes --shapes
        """,
        _run_eval,
    )
    p.add_argument("videos", nargs="+", help="video files, directories of videos, frame directories or datasets")
    p.add_argument("--prompt", default=None, help="the prompt of the video(s)")
    p.add_argument("--prompts", default=None, metavar="FILE",
                   help="one prompt per line for the videos in order, or 'name<TAB>prompt' lines")
    p.add_argument("--json", default=None, help="write the report here (default: print a table)")
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="write per-frame curves as PNG here (several videos without --compare: OUT-000-NAME.png, ...)")
    p.add_argument("--compare", action="store_true", help="one table and one plot for all videos")
    p.add_argument("--shapes", action="store_true", help="score against shapes-world prompts")
    p.add_argument("--window", type=int, default=None, metavar="N",
                   help="with --shapes: frames per long-video drift window (default 240; a video shorter "
                        "than ten windows gets frames // 10, at least 8)")
    p.add_argument("--clip", default=None, metavar="DIR", help="local CLIP model directory for a text-video score")
    p.add_argument("--dino", default=None, metavar="DIR", help="local DINO model directory for subject consistency")


def _run_eval(args) -> None:
    check_utf8(args, "prompt")
    from videogen.evaluation.run import evaluate_cli

    evaluate_cli(args)


# -------------------------------------------------------------------------------- serve
def _add_serve(sub) -> None:
    p = command(
        sub, "serve", "a web page that streams the video as it is made and steers it (extra [web])",
        """
        Start a Gradio page over a pipeline: type a prompt and watch the frames arrive while
        they are generated (with frames/s), change the prompt of the running video (from
        its next latent frame), start from an uploaded image or continue an uploaded
        video, stop, and download the MP4. One generation runs per model at a time by
        default (--concurrency); the others wait in Gradio's queue, their position shown.

        Offline: no telemetry, no web fonts, no share link. It binds to 127.0.0.1 (this
        machine only) unless --host says otherwise. Needs the web extra:
        pip install -e ".[web]". Ctrl-C stops it.

        examples:
          videogen serve
          videogen serve --model ./my-pipeline --port 8080
          videogen serve --host 0.0.0.0 --concurrency 2     # reachable from the network
        """,
        _run_serve,
    )
    p.add_argument("--model", default=None, help="pipeline directory, or default-fast (the embedded "
                   "model's 1-step distilled student); default: the embedded shapes model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--concurrency", type=int, default=1, help="generations at once per model (default: 1)")
    p.add_argument("--max-upload-mb", type=int, default=50, help="largest upload accepted, MB (default: 50)")


def _run_serve(args) -> None:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError('videogen serve needs the web extra: pip install -e ".[web]"') from None
    from videogen.web.app import ServeSettings, serve

    serve(ServeSettings(model=args.model, host=args.host, port=args.port, concurrency=args.concurrency,
                        max_upload_mb=args.max_upload_mb))


# Commands whose process ends as soon as they are done, without the interpreter's teardown
# (utils/process.py: 1.5-2 s of CPU after a `generate`).
QUICK_EXIT = ("generate",)

COMMANDS = [_add_generate, _add_worker, _add_init_model, _add_data, add_cache, add_train, add_distill, _add_eval, add_train_vae,
            _add_serve]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="videogen",
        formatter_class=FMT,
        description=doc(
            """
            Streaming text-to-video with Polynomial Mixers: constant memory in video length.

            quick start:
              videogen generate "a red circle moving right" --frames 240 -o out.mp4
              videogen eval out.mp4 --plot out.png
              videogen data shapes --out data/shapes --num 2000
              videogen train configs/shapes.yaml

            Run `videogen COMMAND --help` for each command's options.
            """
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    # OpenMP threads that spin while they wait made small-model generation ~7x slower on a
    # busy 2-core machine (1.6 vs 10.5 frames/s); they must sleep instead. Only takes effect
    # before torch is imported, which is why the runners import it lazily. A user's own
    # setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot take key=value overrides on both sides of an option
    # (`train CFG --resume latest lr=1`); gather the stragglers here.
    if extra and isinstance(getattr(args, "overrides", None), list) \
            and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        sys.exit(2)
    try:
        args.func(args)
        if argv is None and args.command in QUICK_EXIT:  # run as the program, not called by a test
            from videogen.utils.process import exit_now

            exit_now()
    except UsageError as err:
        print(f"videogen {args.command}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"videogen {args.command}: interrupted; no partial output was left", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
