"""`videogen serve` as its users meet it: time to the first preview, frames/s, and memory.

Starts `videogen serve` on the embedded default model (a fresh process on a free loopback
port), then runs N consecutive generations through Gradio's own client, as a page does.
For each it records the time from submitting to the first preview update, the frames/s
the server reports, and the server's RSS after it. Writes results/serve.json and
results/serve.png (RSS and time to the first preview, per generation).

Bars (issue 20): generation at least the video's fps (it plays faster than real time);
RSS flat over 20 generations.

    python benchmarks/serve.py [--generations 20] [--frames 120] [--model DIR] [--no-screenshots]

It also drives the page in headless Chromium (Debian's package) and saves two
screenshots for the README: results/serve_page_streaming.png (mid-stream, just after the
prompt was changed) and results/serve_page_done.png.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from _common import RESULTS, figure, write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["a red circle moving right", "a blue square moving left", "a green triangle moving up",
           "a yellow circle moving down", "a purple square standing still"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, port: int, log):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "videogen", "serve", "--port", str(port)] + (["--model", model] if model else [])
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError("the server exited; see its log")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url, time.perf_counter() - started
        except OSError:
            time.sleep(0.25)


def one_generation(client, prompt: str, frames: int) -> dict:
    """Submit one generation and follow its outputs as the page would."""
    start = time.perf_counter()
    job = client.submit(prompt, frames, 0, 8, 3.0, None, api_name="/generate")
    first = None
    for _ in job:
        if first is None:
            first = time.perf_counter() - start
    preview, status, video = job.outputs()[-1]
    total = time.perf_counter() - start
    rate = float(re.search(r"([\d.]+) frames/s", status).group(1))
    return {"prompt": prompt, "frames": frames, "first_preview_s": round(first, 3), "total_s": round(total, 2),
            "server_frames_per_s": rate, "video": bool(video)}


def screenshots(url: str, directory: str) -> dict:
    """Generate on the page, change the prompt half-way, screenshot mid-stream and at the end."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)

    def field(elem_id: str):
        return driver.find_element("css selector", f"#{elem_id} input, #{elem_id} textarea")

    def status() -> str:
        found = driver.find_elements("css selector", "#vg-status")
        return found[0].text if found else ""

    def at_frame() -> int:
        found = re.search(r"frame (\d+)/", status())
        return int(found.group(1)) if found else 0

    try:
        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: d.find_elements("css selector", "#vg-generate"))
        field("vg-frames").clear()
        field("vg-frames").send_keys("240")
        driver.find_element("css selector", "#vg-generate").click()
        WebDriverWait(driver, 120, poll_frequency=0.1).until(lambda d: at_frame() >= 40)
        field("vg-new-prompt").send_keys("a blue square moving left")
        driver.find_element("css selector", "#vg-steer-button").click()
        WebDriverWait(driver, 120, poll_frequency=0.1).until(lambda d: at_frame() >= 90)
        driver.execute_script("window.scrollTo(0, 0)")
        streaming = os.path.join(directory, "serve_page_streaming.png")
        driver.save_screenshot(streaming)
        WebDriverWait(driver, 240, poll_frequency=0.2).until(
            lambda d: d.find_elements("css selector", "#vg-video a[href]"))
        driver.execute_script("window.scrollTo(0, 0)")
        done = os.path.join(directory, "serve_page_done.png")
        driver.save_screenshot(done)
        return {"streaming": os.path.basename(streaming), "done": os.path.basename(done), "final_status": status()}
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--model", default=None, help="pipeline directory (default: the embedded model)")
    parser.add_argument("--no-screenshots", action="store_true", help="skip the Chromium screenshots")
    args = parser.parse_args()

    import psutil
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as tmp, open(os.path.join(tmp, "server.log"), "w") as log:
        proc, url, startup = start_server(args.model, free_port(), log)
        try:
            client = Client(url, verbose=False)
            server = psutil.Process(proc.pid)
            runs = []
            for i in range(args.generations):
                run = one_generation(client, PROMPTS[i % len(PROMPTS)], args.frames)
                run["rss_mb"] = round(server.memory_info().rss / 2**20, 1)
                runs.append(run)
                print(f"{i:2d}: first preview {run['first_preview_s']:.2f} s, {run['server_frames_per_s']:.1f} "
                      f"frames/s, RSS {run['rss_mb']:.0f} MB", flush=True)
            shots = None if args.no_screenshots else screenshots(url, RESULTS)
        finally:
            proc.send_signal(subprocess.signal.SIGINT)
            proc.wait(timeout=60)

    fps = 8.0
    rss = [r["rss_mb"] for r in runs]
    rates = sorted(r["server_frames_per_s"] for r in runs)
    firsts = sorted(r["first_preview_s"] for r in runs)
    half = len(rss) // 2
    report = {
        "server_startup_s": round(startup, 2), "frames_per_generation": args.frames, "video_fps": fps,
        "median_first_preview_s": firsts[len(firsts) // 2], "median_frames_per_s": rates[len(rates) // 2],
        "faster_than_real_time": rates[0] >= fps,
        "rss_mb_first": rss[0], "rss_mb_last": rss[-1], "rss_mb_max": max(rss),
        # flat: the second half of the runs holds no more memory than the first half did
        "rss_growth_second_half_mb": round(max(rss[half:]) - max(rss[:half]), 1) if half else 0.0,
        "screenshots": shots,
        "runs": runs,
    }

    def plot(path: str) -> None:
        with figure(path, 1, 2, figsize=(11, 3.8)) as (fig, (left, right)):
            left.plot(range(1, len(rss) + 1), rss, marker="o")
            left.set(xlabel="generation", ylabel="server RSS (MB)", title="memory over consecutive generations",
                     ylim=(0, max(rss) * 1.2))
            right.bar(range(1, len(runs) + 1), [r["first_preview_s"] for r in runs])
            right.set(xlabel="generation", ylabel="seconds", title="submit -> first preview frame")

    print(write_report("serve", report, plot))


if __name__ == "__main__":
    main()
