"""The CLI's speed as a user meets it: `videogen generate PROMPT --frames 240 -o OUT.mp4` in
a fresh process, end to end and to its first frame, the few-step student's cost against the
8-step guided model, the two taking turns.

(a) runs with --a-args (default `--steps 1 --guidance 1`: one denoising call without CFG per
latent frame, what the few-step student costs until it ships as the default model; then
pass --a-args "" to time the default run itself) and (b) with --b-args (default `--steps 8
--guidance 3`), alternately, --repeats times each. Each run is timed from launching the
subprocess to its exit (wall), and from the launch to the moments `generate` reports
through VIDEOGEN_EVENTS (videogen/utils/events.py): imports done, model loaded, first frame
handed to the MP4 encoder (the pixels a viewer could be shown then: the file itself appears
only complete, under its name at the end), file in place. Import probes, in fresh processes
too, give the floor the start-up stands on: `import torch`, the classes a pipeline is made
of (diffusers' AutoencoderKLWan, ModelMixin and scheduler, transformers' T5 encoder and
tokenizer), and what `generate` imports before it loads the model. With --baseline REV, a git revision of this repository runs (a) and (b) as well,
interleaved (its events only if it has them). With --worker, a `videogen worker` started
for the run serves (a) and (b) once more as worker_a and worker_b, interleaved with the
others: the same commands, but their start-up is a thin client's (no torch import) and the
models stay loaded; the worker idles, on no core, while the other runs go.

Bars (issue 24): a <= 0.3x b end to end, a <= 6 s, time to the first frame <= 3 s (goal 1 s).

    python benchmarks/cli_speed.py [--repeats 3] [--baseline REV] [--worker]   # results/cli_speed.{json,png}
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from _common import figure, write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "a red circle moving right"
BARS = {"ratio_a_over_b": 0.3, "a_wall_s": 6.0, "a_first_frame_s": 3.0}
PHASES = (("imported", "interpreter + imports"), ("loaded", "model load (+ transformers' T5 import)"),
          ("first_frame", "first latent frame"), ("done", "the other frames"),
          ("exit", "exit (all of it without events)"))
PROBES = {
    "torch": "import torch",
    "pipeline_classes": "from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler\n"
                        "from diffusers.models.modeling_utils import ModelMixin\n"
                        "from transformers import T5EncoderModel, PreTrainedTokenizerFast",
    "videogen_generate": "import videogen.pipelines.pipeline\n"
                         "from transformers import T5EncoderModel, PreTrainedTokenizerFast",
}


def export_tree(rev: str, into: str) -> str:
    """`rev` of this repository as files under `into` (git archive: no worktree, no checkout)."""
    archive = subprocess.run(["git", "-C", REPO, "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def count_frames(path: str) -> int:
    import av

    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def run_cli(tree: str, args: list, frames: int, tmp: str, worker: str = None) -> dict:
    """One `videogen generate` in a fresh process (on the worker listening at `worker`, or on
    none): seconds from the launch to each event and to the exit, the frames in the file,
    and the load average it started under."""
    out, events = os.path.join(tmp, "out.mp4"), os.path.join(tmp, "events.jsonl")
    for path in (out, events):
        if os.path.exists(path):
            os.remove(path)
    env = {**os.environ, "PYTHONPATH": tree, "OMP_WAIT_POLICY": "PASSIVE", "VIDEOGEN_EVENTS": events,
           "VIDEOGEN_WORKER_SOCKET": worker or os.path.join(tmp, "no-worker.sock")}
    cmd = [sys.executable, "-m", "videogen", "generate", PROMPT, "--frames", str(frames), "-o", out] + args
    load = os.getloadavg()[0]
    start = time.time()
    subprocess.run(cmd, cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = {"exit": time.time() - start}
    if os.path.exists(events):
        with open(events) as f:
            run.update({e["event"]: e["time"] - start for e in map(json.loads, f)})
    return {"s": run, "frames_written": count_frames(out), "loadavg_1min": load}


def start_worker(tmp: str) -> tuple:
    """A `videogen worker` of this checkout on a socket in `tmp`, once it listens: (process, socket)."""
    folder = os.path.join(tmp, "worker")
    os.makedirs(folder, mode=0o700)
    sock = os.path.join(folder, "w.sock")
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_WAIT_POLICY": "PASSIVE", "VIDEOGEN_WORKER_SOCKET": sock}
    env.pop("VIDEOGEN_EVENTS", None)
    process = subprocess.Popen([sys.executable, "-m", "videogen", "worker"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if "listening" not in line:
        process.kill()
        raise RuntimeError(f"the worker did not start: {line!r}")
    return process, sock


def probe(code: str) -> float:
    """Seconds from launching `python -c code` to the end of its imports (teardown not timed)."""
    script = f"{code}\nimport os, time\nprint(repr(time.time()), flush=True)\nos._exit(0)\n"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": REPO}
    start = time.time()
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1]) - start


def median_of(runs: list, key: str):
    values = [r["s"][key] for r in runs if key in r["s"]]
    return statistics.median(values) if values else None


def summarise(variants: dict, runs: dict, probes: dict) -> dict:
    medians = {name: {key: median_of(runs[name], key) for key, _ in PHASES} for name in variants}
    a, b = medians["a"], medians["b"]
    pairs = [ra["s"]["exit"] / rb["s"]["exit"] for ra, rb in zip(runs["a"], runs["b"])]
    ratio = a["exit"] / b["exit"]
    verdict = {"ratio_a_over_b": ratio <= BARS["ratio_a_over_b"], "a_wall_s": a["exit"] <= BARS["a_wall_s"],
               "a_first_frame_s": a["first_frame"] is not None and a["first_frame"] <= BARS["a_first_frame_s"]}
    summary = {"median_s": medians, "ratio_a_over_b": ratio, "median_pair_ratio_a_over_b": statistics.median(pairs),
               "bars": BARS, "passes": verdict,
               "import_probes_median_s": {k: statistics.median(v) for k, v in probes.items()}}
    if "worker_a" in variants:
        wa, wb = medians["worker_a"], medians["worker_b"]
        summary["worker"] = {
            "ratio_a_over_b": wa["exit"] / wb["exit"],
            "median_pair_ratio_a_over_b": statistics.median(
                [ra["s"]["exit"] / rb["s"]["exit"] for ra, rb in zip(runs["worker_a"], runs["worker_b"])]),
            "ratio_a_over_cold_b": wa["exit"] / b["exit"],
            "passes": {"ratio_a_over_b": wa["exit"] / wb["exit"] <= BARS["ratio_a_over_b"],
                       "a_wall_s": wa["exit"] <= BARS["a_wall_s"],
                       "a_first_frame_s": wa["first_frame"] is not None
                       and wa["first_frame"] <= BARS["a_first_frame_s"]}}
    if "before_a" in variants:
        summary["after_over_before"] = {
            side: medians[side]["exit"] / medians[f"before_{side}"]["exit"] for side in ("a", "b")}
        # each repeat's runs are close in time: the ratios within a repeat drift least
        summary["after_over_before_per_repeat"] = {
            side: [r["s"]["exit"] / rb["s"]["exit"] for r, rb in zip(runs[side], runs[f"before_{side}"])]
            for side in ("a", "b")}
    return summary


def plot(path: str, variants: dict, runs: dict, summary: dict, frames: int) -> None:
    colours = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#bbbbbb"]
    with figure(path, 1, 2, figsize=(14, 4.5)) as (fig, (left, right)):
        names = list(variants)
        for row, name in enumerate(names):
            med, previous = summary["median_s"][name], 0.0
            for (key, label), colour in zip(PHASES, colours):
                if med[key] is None:
                    continue
                left.barh(row, med[key] - previous, left=previous, color=colour, label=label if row == 0 else None)
                previous = med[key]
        left.axvline(BARS["a_wall_s"], color="k", ls="--", lw=1, label=f"bar: a <= {BARS['a_wall_s']:g} s")
        left.axvline(BARS["a_first_frame_s"], color="k", ls=":", lw=1,
                     label=f"bar: first frame <= {BARS['a_first_frame_s']:g} s")
        left.set_yticks(range(len(names)), [f"{n}: {' '.join(variants[n]['args']) or '(defaults)'}" for n in names])
        left.set_xlabel("seconds from launch (median)")
        left.set_title(f"videogen generate, {frames} frames: where the time goes")
        left.legend(fontsize=7, loc="best", framealpha=0.9)
        for row, name in enumerate(names):
            walls = [r["s"]["exit"] for r in runs[name]]
            right.scatter(walls, [row] * len(walls), color=colours[row % len(colours)])
        right.set_yticks(range(len(names)), names)
        right.set_xlabel("wall seconds, each run")
        title = f"a / b = {summary['ratio_a_over_b']:.2f}"
        if "worker" in summary:
            title += f", on the worker {summary['worker']['ratio_a_over_b']:.2f}"
        right.set_title(f"{title} (bar {BARS['ratio_a_over_b']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--a-args", default="--steps 1 --guidance 1", help="generate options of run (a)")
    parser.add_argument("--b-args", default="--steps 8 --guidance 3", help="generate options of run (b)")
    parser.add_argument("--baseline", default=None, metavar="REV", help="also time a git revision's (a) and (b)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of (a) first (file caches)")
    parser.add_argument("--worker", action="store_true", help="also time (a) and (b) on a warm `videogen worker`")
    parser.add_argument("--name", default="cli_speed")
    parser.add_argument("--note", default="", help="a line for the report, e.g. what else ran on the machine")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        variants = {"a": {"tree": REPO, "args": shlex.split(args.a_args)},
                    "b": {"tree": REPO, "args": shlex.split(args.b_args)}}
        if args.baseline:
            before = os.path.join(tmp, "before")
            os.makedirs(before)
            export_tree(args.baseline, before)
            variants.update({f"before_{k}": {"tree": before, "args": v["args"]} for k, v in list(variants.items())})
        worker = start_worker(tmp) if args.worker else None
        if worker:
            variants.update({f"worker_{k}": {"tree": REPO, "args": variants[k]["args"], "worker": worker[1]}
                             for k in ("a", "b")})
        runs, probes = {name: [] for name in variants}, {name: [] for name in PROBES}
        try:
            for _ in range(args.warmup):
                run_cli(REPO, variants["a"]["args"], args.frames, tmp)
                for name in ("worker_a", "worker_b") if worker else ():  # each model loaded once on the worker
                    run_cli(REPO, variants[name]["args"], args.frames, tmp, worker[1])
            for rep in range(args.repeats):
                order = list(variants) if rep % 2 == 0 else list(reversed(variants))  # turns, swapped each repeat
                for name in order:
                    run = run_cli(variants[name]["tree"], variants[name]["args"], args.frames, tmp,
                                  variants[name].get("worker"))
                    runs[name].append(run)
                    print(f"repeat {rep} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in run["s"].items()),
                          flush=True)
                for name, code in PROBES.items():
                    probes[name].append(probe(code))
        finally:
            if worker:
                worker[0].terminate()
                worker[0].wait(timeout=60)
    summary = summarise(variants, runs, probes)
    report = {
        "command": f'videogen generate "{PROMPT}" --frames {args.frames} -o OUT.mp4 [ARGS]',
        "variants": {name: {"args": v["args"], "tree": "this checkout" if v["tree"] == REPO else args.baseline,
                            "worker": "worker" in v}
                     for name, v in variants.items()},
        "repeats": args.repeats, "warmup_runs": args.warmup, "order": "alternating, the order reversed each repeat",
        "phases": dict(PHASES), "runs": runs, "import_probes_s": probes, **summary,
        "first_frame_means": "the first frame's pixels handed to the MP4 encoder (what `videogen serve` "
                             "shows at that moment); the file appears at -o only when complete",
        "note": args.note,
    }
    print(json.dumps(summary, indent=2))
    print(write_report(args.name, report, lambda path: plot(path, variants, runs, summary, args.frames)))


if __name__ == "__main__":
    main()
