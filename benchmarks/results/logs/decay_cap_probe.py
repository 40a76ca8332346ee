"""Ad-hoc probe: cap the PoM decay time scale at inference, score drift on chosen videos."""
import json, sys, time, os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np
from concurrent.futures import ProcessPoolExecutor

PROMPTS = {1: "a green square moving up", 5: "a purple circle moving left", 8: "a red triangle moving up",
           9: "a yellow circle standing still", 11: "a green circle moving right", 12: "a green triangle moving down",
           15: "a blue square moving down", 16: "a blue triangle standing still", 17: "a purple square moving right",
           10: "a yellow square standing still", 0: "a yellow triangle moving left", 3: "a red circle moving right"}
_pipe = None

def init(tau, model):
    global _pipe
    import torch
    torch.set_num_threads(1)
    from videogen.pipelines.pipeline import load_pipeline
    from videogen.models import mixers
    _pipe = load_pipeline(model)
    if tau:
        lam_max = float(np.exp(-1.0 / tau))
        for m in _pipe.transformer.modules():
            if isinstance(m, mixers.PoM) and m.decay_rate is not None:
                with torch.no_grad():
                    m.decay_rate.clamp_(min=-np.log(lam_max))

def gen(job):
    from videogen.evaluation.drift import score_drift
    from videogen.evaluation.shapes_scorer import detect, score_video
    seed, frames = job
    prompt = PROMPTS[seed]
    t = time.perf_counter()
    video = np.stack(list(_pipe(prompt, frames, seed=seed, decode_ahead=False)))
    det = detect(video)
    row = score_drift(video, prompt, min(240, frames // 10), det)
    sv = score_video(video[:240], prompt, detect(video[:240]))
    return dict(seed=seed, prompt=prompt, area=round(row["area_ratio"], 3), sharp=round(row["sharpness_ratio"], 3),
                wander=round(row["wander"], 3), checks=row["checks"], dir240=sv["direction_ok"],
                col=sv["detected"], s=round(time.perf_counter() - t))

if __name__ == "__main__":
    tau = float(sys.argv[1]); frames = int(sys.argv[2]); seeds = [int(s) for s in sys.argv[3].split(",")]
    model = sys.argv[4] if len(sys.argv) > 4 else None
    with ProcessPoolExecutor(2, initializer=init, initargs=(tau, model)) as ex:
        for r in ex.map(gen, [(s, frames) for s in seeds]):
            print(json.dumps(dict(tau=tau, **r)), flush=True)
