"""`videogen serve` in a real browser: headless Chromium (Debian's package) driven by
selenium, against a server started on a free loopback port, with every non-loopback
connection of the server refused and recorded, and every request of the page logged."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = [name for name, ok in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not ok]
try:
    import gradio  # noqa: F401
    import selenium  # noqa: F401
except ImportError as err:
    MISSING.append(err.name)
if MISSING and os.environ.get("CI"):
    raise RuntimeError(f"the browser tests need {', '.join(MISSING)}: .ci/run installs them")
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (pip install -e '.[web,dev]'; "
                                                       "apt-get install chromium chromium-driver)")

# Loaded into the server process first (sitecustomize): any connection that is not to
# loopback is refused and written down, so "no network calls" is checked, not assumed.
GUARD = '''
import os, socket
_log = os.environ["VIDEOGEN_TEST_NET_LOG"]
_connect = socket.socket.connect
def _guarded(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
        with open(_log, "a") as f:
            f.write(repr(address) + "\\n")
        raise OSError("network disabled by the test")
    return _connect(self, address)
socket.socket.connect = _guarded
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp, model=None, extra=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        guard_dir = tmp / "guard"
        guard_dir.mkdir(exist_ok=True)
        (guard_dir / "sitecustomize.py").write_text(GUARD)
        self.net_log = tmp / "net.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(guard_dir), REPO]), OMP_NUM_THREADS="2",
                   VIDEOGEN_TEST_NET_LOG=str(self.net_log))
        cmd = [sys.executable, "-m", "videogen", "serve", "--port", str(self.port), *extra]
        if model:
            cmd += ["--model", str(model)]
        self.log_path = tmp / "server.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, (tmp / "server.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError((tmp / "server.log").read_text()[-3000:])

    def workdir(self) -> str:
        """The server's temporary folder, from its start-up line."""
        import re

        return re.search(r"temporary files in (\S+),", self.log_path.read_text()).group(1)

    def network_attempts(self) -> str:
        return self.net_log.read_text() if self.net_log.exists() else ""

    def stop(self) -> int:
        self.proc.send_signal(subprocess.signal.SIGINT)
        code = self.proc.wait(timeout=60)
        self.log.close()
        return code


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1600"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_tiny")
    from videogen.training.components import init_pipeline

    init_pipeline(str(tmp / "tiny"), config=os.path.join(REPO, "configs", "tiny.yaml"), seed=0)
    server = Server(tmp, model=tmp / "tiny", extra=("--max-upload-mb", "1"))
    yield server
    workdir = server.workdir()
    assert server.stop() == 0  # SIGINT stops it cleanly
    assert not os.path.exists(workdir)  # uploads, Gradio's copies and run files all go with it


@pytest.fixture(scope="module")
def page(tiny_server):
    driver = browser()
    yield driver
    driver.quit()


def open_page(driver, server):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(server.url)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements("css selector", "#vg-generate"))


def fill(driver, elem_id: str, value) -> None:
    field = driver.find_element("css selector", f"#{elem_id} input, #{elem_id} textarea")
    field.clear()
    field.send_keys(str(value))


def preview_src(driver):
    found = driver.find_elements("css selector", "#vg-preview-img")
    return found[0].get_attribute("src") if found else None


def status(driver) -> str:
    found = driver.find_elements("css selector", "#vg-status")
    return found[0].text if found else ""


def finished_file(driver):
    links = driver.find_elements("css selector", "#vg-video a[href]")
    return links[0].get_attribute("href") if links else None


def wait_finished(driver, timeout=240):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: finished_file(d))


def decode(url: str, tmp) -> np.ndarray:
    from videogen.data.video_io import read_video

    path = tmp / "download.mp4"
    with urllib.request.urlopen(url, timeout=30) as r:
        path.write_bytes(r.read())
    return read_video(str(path))


def generate(driver, server, prompt, frames, upload=None):
    open_page(driver, server)
    fill(driver, "vg-prompt", prompt)
    fill(driver, "vg-frames", frames)
    if upload is not None:
        driver.find_element("css selector", "#vg-upload input[type=file]").send_keys(str(upload))
        time.sleep(1.5)  # the upload finishes before the click is read
    driver.find_element("css selector", "#vg-generate").click()


def test_preview_streams_before_the_end_and_the_mp4_has_the_asked_frames(page, tiny_server, tmp_path):
    generate(page, tiny_server, "a red circle moving right", 240)
    seen, finished_at = [], None
    deadline = time.time() + 240
    while time.time() < deadline and finished_at is None:
        src = preview_src(page)
        if src and (not seen or seen[-1] != src):
            seen.append(src)
        if finished_file(page):
            finished_at = len(seen)
        time.sleep(0.05)
    assert finished_at is not None, "the generation never finished"
    assert finished_at >= 3, f"the preview changed only {finished_at} times before the end: not streamed"
    assert "frames/s" in status(page) and "240/240" in status(page)
    video = decode(finished_file(page), tmp_path)
    assert video.shape[0] == 240
    assert tiny_server.network_attempts() == ""


def test_an_upload_is_continued(page, tiny_server, tmp_path):
    from PIL import Image

    from videogen.data.shapes import render_clip

    first = render_clip("red", "circle", "moving right", frames=1, size=64, rng=np.random.default_rng(0))[0]
    Image.fromarray(first).save(tmp_path / "first.png")
    generate(page, tiny_server, "a red circle moving right", 16, upload=tmp_path / "first.png")
    video = decode(wait_finished(page), tmp_path)
    assert video.shape[0] == 1 + 16  # the given frame, then the new ones
    # frame 0 is the image, resized to the model's size and through x264
    expected = np.asarray(Image.fromarray(first).resize(video.shape[2:0:-1], Image.BILINEAR)).astype(int)
    assert np.abs(video[0].astype(int) - expected).mean() < 12


def test_a_bad_upload_shows_a_message_not_a_traceback(page, tiny_server, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not an image" * 50)
    generate(page, tiny_server, "a red circle moving right", 8, upload=bad)
    WebDriverWait(page, 60).until(lambda d: "cannot" in d.find_element("tag name", "body").text.lower())
    body = page.find_element("tag name", "body").text
    assert "Traceback" not in body and "broken.png" in body


def test_stop_frees_the_slot(page, tiny_server, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    generate(page, tiny_server, "a red circle moving right", 2400)
    WebDriverWait(page, 60, poll_frequency=0.1).until(lambda d: preview_src(d))
    page.find_element("css selector", "#vg-stop").click()
    WebDriverWait(page, 60).until(lambda d: "stopped" in status(d))
    generate(page, tiny_server, "a blue square moving left", 8)  # the one slot is free again
    assert decode(wait_finished(page, timeout=60), tmp_path).shape[0] == 8


def test_page_requests_stay_on_loopback(page, tiny_server):
    open_page(page, tiny_server)
    time.sleep(2)
    urls = []
    for entry in page.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    outside = [u for u in urls if not u.startswith((tiny_server.url, "data:", "blob:", "ws://127.0.0.1"))]
    assert urls and not outside, outside[:5]


@pytest.mark.skipif(not os.path.isfile(os.path.join(REPO, "videogen", "default_model", "model_index.json")),
                    reason="needs the embedded default model")
def test_a_prompt_change_mid_stream_is_followed(tmp_path):
    """On the embedded default, red circle -> blue square: the frames after the change are blue."""
    from selenium.webdriver.support.ui import WebDriverWait

    from videogen.evaluation.shapes_scorer import detect, nearest_colour

    server = Server(tmp_path)
    driver = browser()
    try:
        generate(driver, server, "a red circle moving right", 160)
        WebDriverWait(driver, 120, poll_frequency=0.1).until(lambda d: "frame 2" in status(d) or "frame 3" in status(d))
        fill(driver, "vg-new-prompt", "a blue square moving left")
        driver.find_element("css selector", "#vg-steer-button").click()
        WebDriverWait(driver, 30).until(lambda d: "prompt set to" in d.find_element("css selector", "#vg-steered").text)
        video = decode(wait_finished(driver), tmp_path)
    finally:
        driver.quit()
        assert server.stop() == 0
    assert video.shape[0] == 160
    det = detect(video)
    colours = [nearest_colour(rgb) if present else None for rgb, present in zip(det.rgb, det.present)]
    assert colours[:8].count("red") >= 7, colours[:8]
    assert colours[-20:].count("blue") >= 18, colours[-20:]


def test_uploads_over_the_size_limit_are_refused_with_a_message(page, tiny_server, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(2 * 2**20))  # the server takes at most 1 MB
    open_page(page, tiny_server)
    page.find_element("css selector", "#vg-upload input[type=file]").send_keys(str(big))
    WebDriverWait(page, 60).until(lambda d: "maximum allowed size of 1.0 mb" in d.find_element("tag name", "body").text.lower())
    assert "Traceback" not in page.find_element("tag name", "body").text


def test_a_second_page_waits_in_the_queue_and_no_run_files_are_left(page, tiny_server, tmp_path):
    """One generation at a time: a second page shows its place in the queue, then runs
    when the first is stopped; the server keeps no run file of either afterwards."""
    from selenium.webdriver.support.ui import WebDriverWait

    generate(page, tiny_server, "a red circle moving right", 2400)
    WebDriverWait(page, 60, poll_frequency=0.1).until(lambda d: preview_src(d))
    second = browser()
    try:
        generate(second, tiny_server, "a blue square moving left", 8)
        WebDriverWait(second, 30, poll_frequency=0.1).until(
            lambda d: "queue" in d.find_element("css selector", "#vg-preview").text.lower()
            or "queue" in d.find_element("tag name", "body").text.lower())
        assert not finished_file(second)
        page.find_element("css selector", "#vg-stop").click()
        video = decode(wait_finished(second, timeout=120), tmp_path)
        assert video.shape[0] == 8
    finally:
        second.quit()
    runs = os.path.join(tiny_server.workdir(), "runs")
    assert os.path.isdir(runs) and os.listdir(runs) == []


def test_the_api_takes_no_path_from_the_client(tiny_server, tmp_path):
    """A request that names a file on the server as its upload, instead of uploading one, is
    refused: only files the server received through its upload route are read."""
    import uuid

    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for the client")
    session = uuid.uuid4().hex
    upload = {"path": str(secret), "meta": {"_type": "gradio.FileData"}, "orig_name": "secret.png"}
    body = json.dumps({"data": ["a red circle moving right", 8, 0, 2, 3.0, upload], "fn_index": 0,
                       "session_hash": session, "event_data": None, "trigger_id": None}).encode()
    request = urllib.request.Request(f"{tiny_server.url}/gradio_api/queue/join", data=body,
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()
    events = []
    with urllib.request.urlopen(f"{tiny_server.url}/gradio_api/queue/data?session_hash={session}", timeout=60) as r:
        for line in r:
            if line.startswith(b"data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("msg") == "process_completed":
                    break
    done = events[-1]
    assert done["msg"] == "process_completed" and not done["success"], done
    assert "not for the client" not in json.dumps(events)
    assert "was not uploaded by a user" in tiny_server.log_path.read_text()  # Gradio's own check refused it


def test_prompts_are_escaped_in_the_page():
    """A prompt is text, never markup: the status line shows it as typed."""
    import time as clock

    from videogen.web.app import status_line

    line = status_line(3, 10, clock.perf_counter() - 1, 8.0, '<img src=x onerror="alert(1)">')
    assert "<img" not in line and "&lt;img src=x" in line
