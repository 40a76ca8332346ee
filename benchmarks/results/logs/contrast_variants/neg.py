"""Flip test on the shipped model: guidance values and an opposite-motion negative prompt."""
import json, sys, time
import numpy as np, torch
from videogen.pipelines.pipeline import load_pipeline
from videogen.models.text import encode_prompts
from videogen.evaluation.shapes_scorer import classify_motion, detect
torch.set_num_threads(2)
PAIRS = (("red", "circle"), ("green", "triangle"), ("white", "square"), ("purple", "circle"))
DIRS = ("left", "right", "up", "down"); OPP = {"left": "right", "right": "left", "up": "down", "down": "up"}
pipe = load_pipeline(None)
NEG = {"": None}
orig = pipe.encode
def encode(prompt, guided):
    neg = NEG["neg"](prompt) if NEG.get("neg") else ""
    emb, mask = encode_prompts(pipe.tokenizer, pipe.text_encoder, [prompt, neg] if guided else [prompt],
                               pipe.config.max_text_length)
    with torch.no_grad():
        return pipe.transformer.encode_text(emb, mask)
pipe.encode = encode
frames = int(sys.argv[1]); variants = sys.argv[2].split(",")
res = {}
for var in variants:
    kind, _, g = var.partition(":")
    NEG["neg"] = {"uncond": None, "opp": lambda p: p.rsplit(" ", 1)[0] + " " + OPP[p.rsplit(" ", 1)[1]],
                  "still": lambda p: p.rsplit(" ", 2)[0]}[kind]
    t0 = time.time(); motion = {}
    for c, sh in PAIRS:
        for seed in range(4):
            for d in DIRS:
                v = np.stack(list(pipe(f"a {c} {sh} moving {d}", frames, seed=seed, guidance=float(g))))
                motion[(c, sh, seed, d)] = classify_motion(detect(v))[0]
    right = np.mean([motion[k] == f"moving {k[3]}" for k in motion])
    same = np.mean([motion[(c, s, seed, a)] == motion[(c, s, seed, b)] for c, s in PAIRS for seed in range(4) for a, b in (("left","right"),("up","down"))])
    res[var] = dict(direction=float(right), same_motion=float(same), s=time.time() - t0)
    print(var, res[var], flush=True)
json.dump(res, open(f"/tmp/exp/neg_{frames}_{sys.argv[2].replace(',','_').replace(':','')}.json", "w"), indent=1)
