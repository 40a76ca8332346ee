"""Flip test: start expert (stage-1 weights) for the first K latent frames, then the shipped model."""
import copy, json, sys, time
import numpy as np, torch
sys.path.insert(0, "/work/main/benchmarks")
from videogen.pipelines.pipeline import load_pipeline
from videogen.training.checkpoint import load_weights
from videogen.diffusion.sampler import StreamingSampler
from videogen.pipelines.stream import StreamSession
from videogen.evaluation.shapes_scorer import classify_motion, detect
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
PAIRS = (("red", "circle"), ("green", "triangle"), ("white", "square"), ("purple", "circle"))
DIRS = ("left", "right", "up", "down"); OPP = (("left", "right"), ("up", "down"))
pipe = load_pipeline(None)
start = copy.deepcopy(pipe.transformer)
start.load_state_dict(load_weights("/work/main/training_state/default_start/checkpoint-004000", "ema"))
start.eval()

def video(prompt, frames, seed, K):
    s = StreamSession(pipe, prompt, frames, seed=seed)
    if K:
        ss = StreamingSampler(start, s.sampler.ctx, s.sampler.latent_shape, s.sampler.settings, pipe.scheduler,
                              s.sampler.generator)
        out = []
        for k in range(K):
            z = ss.next(lookahead=False)
            s.sampler.prime(z[:, :, None], noise=ss.ring[-1][1][:, :, None])
            out += s._decode(z)
            n = 1 if s._pushes == 0 else s.temporal
            s._pushes += 1; s.sampled += n
        s._decoded.extend(out)
    return np.stack(list(s))

seeds = 4; frames = int(sys.argv[1]) if len(sys.argv) > 1 else 17
res = {}
for K in [int(k) for k in sys.argv[3].split(",")]:
    t0 = time.time(); motion = {}
    for c, sh in PAIRS:
        for seed in range(seeds):
            for d in DIRS:
                v = video(f"a {c} {sh} moving {d}", frames, seed, K)
                assert len(v) == frames, len(v)
                motion[(c, sh, seed, d)] = classify_motion(detect(v))[0]
    right = np.mean([motion[k] == f"moving {k[3]}" for k in motion])
    same = np.mean([motion[(c, s, seed, a)] == motion[(c, s, seed, b)] for c, s in PAIRS for seed in range(seeds) for a, b in OPP])
    res[K] = dict(direction=float(right), same_motion=float(same), s=time.time() - t0)
    print(K, res[K], flush=True)
json.dump(res, open(f"/tmp/exp/handoff_{frames}.json", "w"), indent=1)
