import sys, time
import numpy as np, torch
torch.set_num_threads(2)
from videogen.pipelines.pipeline import load_pipeline
from videogen.evaluation.shapes_scorer import classify_motion, detect
PAIRS = (("red", "circle"), ("green", "triangle"), ("white", "square"), ("purple", "circle"))
DIRS = ("left", "right", "up", "down")
pipe = load_pipeline(None)
frames = int(sys.argv[1])
for K in [int(k) for k in sys.argv[2].split(",")]:
    pipe.register_to_config(contrast_frames=K)
    t0 = time.time(); motion = {}
    for c, sh in PAIRS:
        for seed in range(4):
            for d in DIRS:
                v = np.stack(list(pipe(f"a {c} {sh} moving {d}", frames, seed=seed)))
                motion[(c, sh, seed, d)] = classify_motion(detect(v))[0]
    right = np.mean([motion[k] == f"moving {k[3]}" for k in motion])
    same = np.mean([motion[(c, s, seed, a)] == motion[(c, s, seed, b)] for c, s in PAIRS for seed in range(4) for a, b in (("left","right"),("up","down"))])
    print(K, dict(direction=float(right), same_motion=float(same), s=time.time() - t0), flush=True)
