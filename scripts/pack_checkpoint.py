"""Pack an accelerate checkpoint to travel in git, and unpack it back, in place.

    python scripts/pack_checkpoint.py pack DIR     # before training_state/ is committed
    python scripts/pack_checkpoint.py unpack DIR   # before a resume reads it

`pack` turns the pickled tensor files of `accelerator.save_state` into safetensors:
`optimizer*.bin` (AdamW's state, its moments stored in bfloat16) and
`custom_checkpoint_*.pkl` (older checkpoints' registered objects: the step, and before the
EMA moved to its own `ema.safetensors`, the EMA weights, kept exact; a resume reads the
step from trainer_state.json and never opens them). `unpack` writes the pickles back
where a resume reads them. The model's own weights (`model.safetensors`,
`ema.safetensors`) stay as they are; the RNG states and the LR scheduler (small, no
tensors of weights) too; the file sizes trainer_state.json records are updated to match.
Every pickle is read with weights_only=True: one that names
anything but tensors and numbers is refused, not run.

Why bfloat16 moments: the training state is committed once a session and the commits of a
session have a size limit. Halving the optimizer takes the DiT's checkpoint from 63 MB to
46 MB. Adam divides by the square root of the second moment, so its relative error of
2^-9 in bfloat16 moves an update by at most ~0.1%, and on resume the moments are
refreshed by the next hundred steps (betas 0.9, 0.99) anyway.
"""

import argparse
import json
import os
import pickle
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

STRUCT = "videogen.struct"  # the safetensors metadata key that holds the non-tensor skeleton


def _flatten(obj, key: str, tensors: dict, cast):
    """The object with every tensor replaced by {"$t": key, "dtype": ...}, tensors collected."""
    if isinstance(obj, torch.Tensor):
        stored = cast(obj.detach().cpu().contiguous().clone())
        tensors[key] = stored
        return {"$t": key, "dtype": str(obj.dtype).removeprefix("torch.")}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"{key}: dict keys must be str or int to pack")
        return {"$d": [[k, _flatten(v, f"{key}.{k}", tensors, cast)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{key}.{i}", tensors, cast) for i, v in enumerate(obj)]
        return {"$l": items, "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{key}: cannot pack a {type(obj).__name__}")


def _unflatten(node, tensors: dict):
    if isinstance(node, dict):
        if "$t" in node:
            return tensors[node["$t"]].to(getattr(torch, node["dtype"]))
        if "$d" in node:
            return {k: _unflatten(v, tensors) for k, v in node["$d"]}
        items = [_unflatten(v, tensors) for v in node["$l"]]
        return tuple(items) if node["tuple"] else items
    return node


def _moments_to_bf16(t: torch.Tensor) -> torch.Tensor:
    # step counters (0-d) stay exact; moment tensors are halved
    return t.to(torch.bfloat16) if t.is_floating_point() and t.dim() > 0 else t


def _packable(ckpt: Path) -> list:
    """(pickle, cast) for each tensor pickle that `pack` converts."""
    files = [(p, _moments_to_bf16) for p in sorted(ckpt.glob("optimizer*.bin"))]
    return files + [(p, lambda t: t) for p in sorted(ckpt.glob("custom_checkpoint_*.pkl"))]


def _replace(path: Path, write) -> None:
    """Write through a temporary name and rename into place."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _record(ckpt: Path, removed: Path, written: Path) -> None:
    """Keep the file sizes trainer_state.json records (a resume checks them) true to the
    files now there: one more converted file."""
    state_file = ckpt / "trainer_state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    if not isinstance(state.get("files"), dict):
        return  # written before the sizes were recorded
    state["files"].pop(removed.name, None)
    state["files"][written.name] = written.stat().st_size
    _replace(state_file, lambda tmp: tmp.write_text(json.dumps(state)))


def pack(ckpt: Path) -> list:
    """Convert the checkpoint's tensor pickles to safetensors; returns the files written."""
    written = []
    for src, cast in _packable(ckpt):
        obj = torch.load(src, map_location="cpu", weights_only=True)  # tensors and numbers only: a planted pickle runs nothing
        tensors: dict = {}
        skeleton = _flatten(obj, "root", tensors, cast)
        dst = src.with_suffix(".safetensors")
        _replace(dst, lambda tmp: save_file(tensors, str(tmp), metadata={STRUCT: json.dumps(skeleton)}))
        src.unlink()
        _record(ckpt, src, dst)
        written.append(dst)
    return written


def unpack(ckpt: Path) -> list:
    """Write back the pickles that accelerate.load_state reads; returns the files written."""
    written = []
    for src in sorted(list(ckpt.glob("optimizer*.safetensors")) + list(ckpt.glob("custom_checkpoint_*.safetensors"))):
        with safe_open(str(src), "pt") as f:
            skeleton = json.loads(f.metadata()[STRUCT])
        obj = _unflatten(skeleton, load_file(str(src)))
        dst = src.with_suffix(".bin" if src.name.startswith("optimizer") else ".pkl")
        _replace(dst, lambda tmp: torch.save(obj, tmp))
        src.unlink()
        _record(ckpt, src, dst)
        written.append(dst)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["pack", "unpack"])
    p.add_argument("checkpoint", type=Path, help="an accelerate checkpoint directory (checkpoint-NNNNNN)")
    args = p.parse_args(argv)
    if not args.checkpoint.is_dir():
        print(f"pack_checkpoint: no checkpoint directory '{args.checkpoint}'", file=sys.stderr)
        return 2
    try:
        done = (pack if args.action == "pack" else unpack)(args.checkpoint)
    except pickle.UnpicklingError as err:
        print(f"pack_checkpoint: refused a file of '{args.checkpoint}' that holds more than tensors "
              f"({str(err).splitlines()[-1][:120]})", file=sys.stderr)
        return 2
    for path in done:
        print(f"{args.action}ed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
