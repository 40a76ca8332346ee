"""`videogen serve`: a Gradio page that streams a video while it is made, and steers it.

The page drives the pipelines' streaming session (`pipe.stream`), the same one the CLI's
prompt schedule uses: a generator yields a preview as each frame is decoded, a second
control calls `set_prompt` on the running session (effective at the next latent frame not
yet sampled: the session decodes each one on a second thread while it samples the next),
and Gradio's queue serialises generations per model (design §11).

Offline and safe by construction: analytics off, system fonts (no CDN), no share link,
loopback by default, uploads bounded in size and type and read only from the temporary
file Gradio wrote (no path ever comes from the client), temporary files removed.
"""


import base64
import html
import io
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from videogen.data.video_io import IMAGE_EXTENSIONS
from videogen.errors import UsageError

IMAGE_TYPES = IMAGE_EXTENSIONS  # what the pipeline's image reader takes
VIDEO_TYPES = (".mp4", ".webm", ".mov", ".mkv", ".gif", ".avi")
PREVIEW_SIZE = 256  # pixels: the 64x64 default is too small to watch at its own size
PREVIEW_EVERY_S = 0.08  # at most ~12 preview updates a second: the browser, not the model, is the limit
MAX_FRAMES = 2400


@dataclass
class ServeSettings:
    """What `videogen serve` takes; validated once, before the model loads."""

    model: Optional[str] = None
    host: str = "127.0.0.1"
    port: int = 7860
    concurrency: int = 1  # generations running at once per model; the rest wait in the queue
    max_upload_mb: int = 50
    max_frames: int = MAX_FRAMES

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise UsageError(f"--port must be in 1..65535, not {self.port}")
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1, not {self.concurrency}")
        if self.max_upload_mb < 1:
            raise UsageError(f"--max-upload-mb must be at least 1, not {self.max_upload_mb}")


class Sessions:
    """The running stream of each browser session, so that the steer and stop controls
    (separate requests) reach the generation that their page started."""

    def __init__(self):
        self._lock = threading.Lock()
        self._streams: dict = {}

    def put(self, key: str, stream) -> None:
        with self._lock:
            self._streams[key] = stream

    def get(self, key: str):
        with self._lock:
            return self._streams.get(key)

    def pop(self, key: str, stream=None) -> None:
        with self._lock:
            if stream is None or self._streams.get(key) is stream:
                self._streams.pop(key, None)


def preview_html(frame: np.ndarray) -> str:
    """An (H, W, 3) uint8 frame as an inline PNG: no file per preview, nothing to clean up."""
    from PIL import Image

    image = Image.fromarray(frame)
    scale = max(1, PREVIEW_SIZE // max(image.size))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img id="vg-preview-img" alt="preview" src="data:image/png;base64,{data}" style="image-rendering: pixelated">'


def status_line(done: int, total: int, started: float, fps: float, prompt: str) -> str:
    elapsed = max(time.perf_counter() - started, 1e-6)
    rate = done / elapsed
    pace = "faster than real time" if rate >= fps else "slower than real time"
    return (f'<span id="vg-status">frame {done}/{total} · {rate:.1f} frames/s generated '
            f'(the video plays at {fps:g} fps: {pace}) · prompt: {html.escape(prompt)}</span>')


def read_upload(path: Optional[str]):
    """The frames of an uploaded image or video, an iterable of (H, W, 3) uint8, or None.

    `path` is the temporary file Gradio wrote for the upload (never a path from the
    client); its type is checked by extension here and by decoding in the pipeline, so a
    renamed or broken file gets one clear message.
    """
    if not path:
        return None
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_TYPES + VIDEO_TYPES:
        raise UsageError(f"uploads must be an image ({', '.join(IMAGE_TYPES)}) or a video "
                         f"({', '.join(VIDEO_TYPES)}), not '{ext or 'a file without extension'}'")
    from videogen.pipelines.init_frames import open_init_video, read_init_image

    label = f"the upload '{os.path.basename(path)}'"  # its own name, not the server's temporary path
    return [read_init_image(path, label)] if ext in IMAGE_TYPES else open_init_video(path, label)


@dataclass
class Run:
    """One generation: its streaming session and the flag its page's Stop button sets."""

    stream: object
    stop: threading.Event


class VideoApp:
    """The page's callbacks over one loaded pipeline."""

    def __init__(self, pipe, settings: ServeSettings, workdir: str):
        self.pipe, self.settings, self.workdir = pipe, settings, workdir
        self.sessions = Sessions()
        self.fps = float(pipe.config.fps)

    def check(self, prompt: str, frames, seed, steps, guidance) -> tuple:
        """The form's values as the pipeline takes them, or one UsageError naming the fix."""
        # the prompt itself: checked by the session (pipelines.stream.check_prompt)
        values = {"frames": frames, "seed": seed, "steps": steps}
        for name, value in values.items():
            if value is None or float(value) != int(value):
                raise UsageError(f"{name} must be a whole number, not {value}")
        frames, seed, steps = int(frames), int(seed), int(steps)
        if not 1 <= frames <= self.settings.max_frames:
            raise UsageError(f"frames must be in 1..{self.settings.max_frames}, not {frames}")
        if not 1 <= steps <= 100:
            raise UsageError(f"steps must be in 1..100, not {steps}")
        # guidance: checked by the session (pipelines.stream.check_sampling), as for the CLI
        return (prompt or "").strip(), frames, seed, steps, None if guidance is None else float(guidance)

    def generate(self, prompt, frames, seed, steps, guidance, upload, request):
        """Yields (preview HTML, status HTML, MP4 path or None) while the video is made."""
        import gradio as gr

        try:
            prompt, frames, seed, steps, guidance = self.check(prompt, frames, seed, steps, guidance)
            init = read_upload(upload)
            stream = self.pipe.stream(prompt, num_frames=frames, seed=seed, steps=steps, guidance=guidance,
                                      init_frames=init, decode_ahead=True)
        except UsageError as err:
            raise gr.Error(str(err), print_exception=False) from None
        run = Run(stream, threading.Event())
        key = request.session_hash
        self.sessions.put(key, run)
        try:
            yield from self._stream(run, prompt, frames)
        except UsageError as err:  # e.g. an upload that stops decoding half-way
            raise gr.Error(str(err), print_exception=False) from None
        finally:
            self.sessions.pop(key, run)

    def _stream(self, run: Run, prompt: str, frames: int):
        from videogen.data.video_io import open_writer

        out_dir = tempfile.mkdtemp(prefix="run-", dir=self.workdir)
        path = os.path.join(out_dir, "videogen.mp4")
        started, shown, done, frame = time.perf_counter(), 0.0, 0, None
        total = frames
        try:
            with open_writer(path, fps=self.fps) as writer:
                for frame in run.stream:  # the session computes without autograd
                    writer.write(frame)
                    done += 1
                    total = max(total, done)
                    now = time.perf_counter()
                    if now - shown >= PREVIEW_EVERY_S:
                        shown = now
                        yield preview_html(frame), status_line(done, total, started, self.fps,
                                                               run.stream.prompt), None
                    if run.stop.is_set():
                        break
            if frame is None:
                raise UsageError("nothing was generated")
            final = status_line(done, total, started, self.fps, run.stream.prompt)
            if run.stop.is_set():
                final = final.replace('<span id="vg-status">', '<span id="vg-status">stopped · ', 1)
            yield preview_html(frame), final, path  # Gradio copies the file into its own cache
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)

    def steer(self, new_prompt: str, request) -> str:
        """Change the running stream's prompt; it takes effect at the next latent frame not yet
        sampled (with `decode_ahead`, the one after the frames being decoded)."""
        import gradio as gr

        run = self.sessions.get(request.session_hash)
        if run is None:
            raise gr.Error("nothing is generating on this page; press Generate first", print_exception=False)
        try:
            run.stream.set_prompt(new_prompt)
        except UsageError as err:
            raise gr.Error(str(err), print_exception=False) from None
        return f'<span id="vg-steer">prompt set to: {html.escape(new_prompt.strip())} (from the next latent frame)</span>'

    def stop(self, request) -> None:
        """Stop this page's generation at the next frame: its slot in the queue frees."""
        run = self.sessions.get(request.session_hash)
        if run is not None:
            run.stop.set()


def build_page(app: VideoApp):
    """The Gradio Blocks of the page (call inside no other Blocks)."""
    import gradio as gr

    with gr.Blocks(title="videogen", analytics_enabled=False, delete_cache=(60, 600)) as page:
        gr.Markdown("# videogen\nStreaming text-to-video with Polynomial Mixers: the video appears while it "
                    "is made, and you can change the prompt as it grows.")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", value="a red circle moving right", elem_id="vg-prompt")
                with gr.Row():
                    frames = gr.Number(label="Frames", value=120, precision=0, minimum=1,
                                       maximum=app.settings.max_frames, elem_id="vg-frames")
                    seed = gr.Number(label="Seed", value=0, precision=0, elem_id="vg-seed")
                    steps = gr.Number(label="Steps", value=int(app.pipe.config.steps), precision=0, minimum=1,
                                      maximum=100, elem_id="vg-steps")
                    guidance = gr.Number(label="Guidance", value=float(app.pipe.config.guidance), minimum=0,
                                         elem_id="vg-guidance")
                upload = gr.File(label="Start from an image or continue a video (optional)", type="filepath",
                                 file_types=list(IMAGE_TYPES + VIDEO_TYPES), elem_id="vg-upload")
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="vg-generate")
                    stop = gr.Button("Stop", elem_id="vg-stop")
            with gr.Column():
                preview = gr.HTML(label="Live preview", elem_id="vg-preview")
                status = gr.HTML(elem_id="vg-status-box")
                with gr.Row():
                    new_prompt = gr.Textbox(label="Change the prompt while it streams", scale=3,
                                            elem_id="vg-new-prompt")
                    steer = gr.Button("Change prompt", scale=1, elem_id="vg-steer-button")
                steered = gr.HTML(elem_id="vg-steered")
                video = gr.File(label="Finished MP4", elem_id="vg-video")

        def generate(p, f, s, st, g, u, request: gr.Request):
            yield from app.generate(p, f, s, st, g, u, request)

        def do_steer(text, request: gr.Request):
            return app.steer(text, request)

        def do_stop(request: gr.Request):
            app.stop(request)

        run.click(generate, [prompt, frames, seed, steps, guidance, upload], [preview, status, video],
                  concurrency_id="generate")
        # Steering and stopping reach a running generation, so they must not wait behind it.
        steer.click(do_steer, [new_prompt], [steered], queue=False)
        new_prompt.submit(do_steer, [new_prompt], [steered], queue=False)
        stop.click(do_stop, None, None, queue=False)
        page.unload(do_stop)  # a closed tab frees its slot too
    return page


def theme():
    """Gradio's base theme on system fonts: the default one fetches web fonts from a CDN."""
    import gradio as gr

    return gr.themes.Base(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def serve(settings: ServeSettings) -> None:
    """`videogen serve`: load the model, start the page, run until SIGINT or SIGTERM."""
    settings.validate()
    workdir = tempfile.mkdtemp(prefix="videogen-serve-")
    # Read by Gradio at import time: its uploads and output copies land in our folder,
    # which goes when the server does; and no telemetry or version check, ever.
    # Our own run files stay outside Gradio's folder, so it copies each finished MP4 into
    # its cache (where the page may fetch it) and we can delete ours at once.
    os.environ["GRADIO_TEMP_DIR"] = os.path.join(workdir, "gradio")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        _serve(settings, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _serve(settings: ServeSettings, workdir: str) -> None:
    from videogen.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(settings.model)
    runs = os.path.join(workdir, "runs")
    os.makedirs(runs)
    app = VideoApp(pipe, settings, runs)
    page = build_page(app)
    page.queue(default_concurrency_limit=settings.concurrency)
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _, url, _ = page.launch(server_name=settings.host, server_port=settings.port, share=False,
                                prevent_thread_lock=True, max_file_size=f"{settings.max_upload_mb}mb",
                                ssr_mode=False, theme=theme(), footer_links=[], quiet=True)
        print(f"videogen serve: {url} (Ctrl-C stops); temporary files in {os.path.dirname(app.workdir)}, "
              "removed when it stops", flush=True)
        done.wait()
    finally:
        page.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("videogen serve: stopped", flush=True)
