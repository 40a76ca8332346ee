"""YAML configs read with omegaconf into typed dataclasses.

`load_structured(schema, path, overrides)` merges a YAML file with `key=value` overrides,
rejects unknown keys with the nearest known key, and returns the dataclass. Each config
section is a dataclass that lives beside the component it configures.

`path` is a YAML file, or the name of a config shipped in videogen/configs ("tiny",
"tiny.yaml", or "configs/tiny.yaml", the repo-root link's spelling), so that the shipped
configs work from any folder and from an installed package. A file may start from another
(`base: shapes`, `file_layers`) and give only what differs.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import fields, is_dataclass
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from videogen.errors import UsageError

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
YAML_SUFFIXES = (".yaml", ".yml")


def shipped_configs() -> list:
    """Names of the configs in videogen/configs, without the extension."""
    return sorted(os.path.splitext(n)[0] for n in os.listdir(SHIPPED_DIR) if n.endswith(YAML_SUFFIXES))


def resolve_config(name_or_path: str, example: str = "configs/tiny.yaml") -> str:
    """The YAML file meant by `name_or_path`: an existing file as given, else the shipped
    config of that name. Neither is a UsageError listing the shipped names."""
    if os.path.isfile(name_or_path):
        return name_or_path
    folder, base = os.path.split(os.path.normpath(name_or_path))
    stem, ext = os.path.splitext(base)
    name = stem if ext in YAML_SUFFIXES else base
    if folder in ("", "configs") and name in shipped_configs():
        return os.path.join(SHIPPED_DIR, name + ".yaml")
    close = difflib.get_close_matches(name, shipped_configs(), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UsageError(f"config '{name_or_path}' not found: {hint}pass a YAML file such as {example}, "
                     f"or a shipped config: {', '.join(shipped_configs())}")


def check_keys(given: Any, schema: Any, prefix: str = "") -> None:
    if not isinstance(given, dict) or not is_dataclass(schema):
        return
    known = {f.name: f for f in fields(schema)}
    for key, value in given.items():
        if key not in known:
            path = f"{prefix}{key}"
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"known keys: {', '.join(known)}"
            raise UsageError(f"unknown config key '{path}': {hint}")
        sub = getattr(schema, key) if not isinstance(schema, type) else None
        if sub is not None and is_dataclass(sub):
            check_keys(value, sub, f"{prefix}{key}.")


def file_layers(path: str, example: str, seen: tuple = ()) -> list:
    """The layers of a YAML file: those of the config its top-level `base:` names (a shipped
    config's name, or a file path relative to this file), then its own keys, which replace
    the base's (mappings merge key by key, lists are replaced whole)."""
    real = os.path.realpath(path)
    if real in seen:
        chain = " -> ".join(os.path.basename(p) for p in (*seen, real))
        raise UsageError(f"config '{path}' is its own base ({chain}): remove one of the base: lines")
    try:
        layer = OmegaConf.load(path)
    except Exception as err:  # yaml errors come in many types
        raise UsageError(f"config file '{path}' is not valid YAML: {err}".splitlines()[0]) from None
    if not OmegaConf.is_dict(layer):  # a YAML list or scalar
        raise UsageError(f"config file '{path}' must hold sections (model:, train:, ...), not a list")
    if "base" not in layer:
        return [layer]
    base = layer.pop("base")
    if not isinstance(base, str) or not base:
        raise UsageError(f"'base:' in '{path}' must name a config, e.g. base: shapes, not {base!r}")
    beside = os.path.join(os.path.dirname(path), base)
    base_path = beside if os.path.isfile(beside) else resolve_config(base, example)
    return file_layers(base_path, example, (*seen, real)) + [layer]


def load_structured(schema: type, path: Optional[str], overrides: Optional[list], example: str):
    """Read `path` (YAML) and `overrides` (['train.lr=1e-4', ...]) into dataclass `schema`,
    rejecting unknown keys with the nearest known one. `example` names a config for errors."""
    layers = [] if path is None else file_layers(resolve_config(path, example), example)
    for item in overrides or []:
        if "=" not in item:
            raise UsageError(f"override '{item}' must look like key=value, e.g. train.lr=1e-4")
    if overrides:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    defaults = schema()
    for layer in layers:
        refuse_environment(OmegaConf.to_container(layer, resolve=False))
        check_keys(OmegaConf.to_container(layer, resolve=False), defaults)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), *layers))
    except OmegaConfBaseException as err:
        raise UsageError(config_error(err)) from None
    except TypeError:  # omegaconf's merge of a list into a mapping or back
        key = _mismatched_container(schema, layers)
        raise UsageError(f"config key '{key}' has a list where a mapping is expected, or the other way round: "
                         "write mappings as {a: b} (e.g. sampling.contrast={left: right}) and lists as [a, b] "
                         "(e.g. data.size=[64,64])") from None


def _mismatched_container(schema: type, layers: list) -> str:
    """The dotted key whose list or mapping the schema's merge refused ('?' if none alone is)."""
    for layer in layers:
        for section, values in OmegaConf.to_container(layer, resolve=False).items():
            for key, value in (values.items() if isinstance(values, dict) else ()):
                if isinstance(value, (dict, list)):
                    try:
                        OmegaConf.merge(OmegaConf.structured(schema), {section: {key: value}})
                    except TypeError:
                        return f"{section}.{key}"
                    except OmegaConfBaseException:
                        continue
    return "?"


# omegaconf's names for the types it could not convert a value to, as the YAML reader says them
_TYPE_NAMES = {"Float": "a float (e.g. 3e-4)", "Integer": "an int (e.g. 8)", "Boolean": "a bool (true or false)"}


def config_error(err: OmegaConfBaseException) -> str:
    """One line for a config value omegaconf refused, naming its key and what it expects."""
    key = getattr(err, "full_key", None) or "?"
    message = (getattr(err, "msg", None) or str(err)).splitlines()[0]
    converted = re.fullmatch(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", message)
    if converted:
        expected = _TYPE_NAMES.get(converted.group(2), converted.group(2).lower())
        return f"config key '{key}' must be {expected}, not '{converted.group(1)}'"
    missing = re.fullmatch(r"Interpolation key '(.*)' not found", message)
    if missing:
        return (f"config key '{key}' refers to ${{{missing.group(1)}}}, which is no config key; "
                "write the value or the full dotted key (e.g. ${train.output_dir})")
    return f"config key '{key}': {message}"


def refuse_environment(node: Any, prefix: str = "") -> None:
    """${oc.env:...} would be written resolved into checkpoints and exports (a home folder,
    a token): refused, so that a config says everything it depends on."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, str) and re.search(r"\$\{\s*oc\.env\s*:", value):
            raise UsageError(f"environment interpolation is not allowed in configs: write the value "
                             f"({prefix}{key}: {value})")
        refuse_environment(value, f"{prefix}{key}.")
