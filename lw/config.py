"""Typed, strict Hydra configs of the `lw` commands.

Every program has a dataclass schema. `compose` reads `lw/conf/<name>.yaml`
(with its defaults list / config groups), applies CLI overrides, and merges the
result into the schema in struct mode: an unknown key fails with its name, a value
of the wrong type fails with the field. The result is a plain dataclass instance.
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf

from worldmodel.errors import ConfigError  # noqa: F401  (re-exported: `from lw.config import ConfigError`)

CONF_DIR = Path(__file__).parent / "conf"
T = TypeVar("T")
HELP_FLAGS = ("-h", "--help")
HELP_WIDTH = 110  # columns of `lw <command> --help`; longer comments wrap


class HelpRequested(Exception):
    """`-h` / `--help` among a command's arguments: `compose` raises this instead of returning a
    config, with the command's help as `text`; `lw` prints it and exits 0."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def _plain_fields(schema: type | None) -> set[str]:
    """Schema fields holding a plain value (not a nested dataclass): never config groups."""
    if schema is None or not dataclasses.is_dataclass(schema):
        return set()
    out = set()
    for f in dataclasses.fields(schema):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if not dataclasses.is_dataclass(default):
            out.add(f.name)
    return out


def _split_overrides(overrides: list[str], schema: type | None = None) -> tuple[list[str], list[str]]:
    """Config-group choices (`model=small`, a folder in conf/) go to Hydra; values go to the schema.

    A key that is a plain-valued field of `schema` is a value even when conf/ has a group
    folder of that name (e.g. `lw eval-prediction model=<folder>` vs `lw pretrain model=tiny`).
    """
    groups, values = [], []
    plain = _plain_fields(schema)
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form key=value")
        key = o.split("=", 1)[0].lstrip("+~")
        is_group = (CONF_DIR / key).is_dir() and key not in plain
        (groups if is_group else values).append(o.lstrip("+"))
    return groups, values


def compose(schema: type[T], name: str, overrides: list[str] | None = None, doc: str | None = None) -> T:
    """Load config `name` from lw/conf, apply `overrides`, validate against `schema`.

    Group choices (e.g. `experiment=tiny_cpu`) are resolved by Hydra's defaults list;
    value overrides (`optim.lr=1e-3`) are merged into the schema, so every schema field can
    be overridden even when no YAML mentions it, and a misspelt key fails with its name.
    `-h`/`--help` among the overrides raises HelpRequested (`doc`: what the command does).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    overrides = list(overrides or [])
    if any(o in HELP_FLAGS for o in overrides):
        raise HelpRequested(describe(schema, name, [o for o in overrides if o not in HELP_FLAGS], doc))
    groups, values = _split_overrides(overrides, schema)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            raw = hydra_compose(config_name=name, overrides=groups)
    except Exception as e:  # hydra's own errors already name the bad config or choice
        raise ConfigError(f"bad config or override for '{name}': {e}") from e
    finally:
        GlobalHydra.instance().clear()
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    try:
        merged = OmegaConf.merge(base, raw, OmegaConf.from_dotlist(values))
    except ConfigKeyError as e:
        raise ConfigError(f"unknown config key for '{name}': {e.full_key!s} "
                          f"(valid top-level keys: {', '.join(f.name for f in dataclasses.fields(schema))})") from e
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config for '{name}': {e}") from e
    try:
        return OmegaConf.to_object(merged)
    except ValueError as e:  # a schema's __post_init__ rejected a value; its message names the key
        raise ConfigError(f"invalid config for '{name}': {e}") from e


# ---------------------------------------------------------------- `lw <command> --help`
def _comment_start(line: str) -> int:
    """Column of the `#` that starts a YAML comment (outside quotes), or -1."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return i
    return -1


def _yaml_comments(path: Path, prefix: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """One-line comments of a config file: ({dotted key: comment}, {defaults-list group: comment}).

    A key's comment is the `# ...` after it, joined with the comment-only lines below that start
    in the same column (a comment wrapped over several lines)."""
    keys: dict[str, str] = {}
    groups: dict[str, str] = {}
    stack: list[tuple[int, str]] = []        # (indent, key) of the mappings we are inside
    last: tuple[dict, str, int] | None = None  # where a continuation line would go, its column
    for raw in path.read_text().splitlines():
        body = raw.lstrip()
        indent = len(raw) - len(body)
        col = _comment_start(raw)
        code, comment = (raw[:col], raw[col + 1:].strip()) if col >= 0 else (raw, "")
        if not code.strip():
            if body.startswith("#") and last is not None and col == last[2]:
                last[0][last[1]] += " " + comment
            else:
                last = None
            continue
        last = None
        m = re.match(r"\s*(-\s+)?([\w./@]+)\s*:(.*)$", code)
        if not m:
            continue
        dash, key, value = m.group(1), m.group(2), m.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if dash:   # an entry of the defaults list: `- group: choice  # comment`
            if stack and stack[-1][1] == "defaults" and comment:
                groups[key] = comment
                last = (groups, key, col)
            continue
        path_ = ".".join([*(k for _, k in stack), key])
        if comment:
            keys[prefix + path_] = comment
            last = (keys, prefix + path_, col)
        if not value:
            stack.append((indent, key))
    return keys, groups


def _schema_comments(cls: type) -> dict[str, str]:
    """{field: comment} from the `# ...` after each field of a dataclass's source (with the
    comment-only lines below it that start in the same column)."""
    try:
        src = textwrap.dedent(inspect.getsource(cls))
        tokens = list(tokenize.generate_tokens(io.StringIO(src).readline))
    except (OSError, TypeError, tokenize.TokenError, IndentationError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    lines = src.splitlines()
    out: dict[str, str] = {}
    last: tuple[str, int] | None = None
    for tok in tokens:
        if tok.type != tokenize.COMMENT:
            continue
        row, col = tok.start
        line = lines[row - 1]
        text = tok.string[1:].strip()
        m = re.match(r"\s+(\w+)\s*:", line)
        if m and m.group(1) in names and line.index(m.group(1)) == 4:  # a field of the class body
            out[m.group(1)] = text
            last = (m.group(1), col)
        elif not line[:col].strip() and last is not None and col == last[1]:
            out[last[0]] += " " + text
        else:
            last = None
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v if re.fullmatch(r"[\w./:{}@+\-]+", v) else json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def _flat(obj: Any, prefix: str = ""):
    """(dotted key, value, comment from the schema) of every plain field, nested dataclasses expanded."""
    comments = _schema_comments(type(obj))
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from _flat(v, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, v, comments.get(f.name, "")


def _defaults(name: str) -> list[Any]:
    raw = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    return list(OmegaConf.to_container(raw).get("defaults", [])) if "defaults" in raw else []


def describe(schema: type, name: str, overrides: list[str] | None = None, doc: str | None = None) -> str:
    """The help of the command whose config is `name`: what it does (the first paragraph of `doc`,
    the command module's docstring; default the schema's module's), a usage line, its config groups
    and every config key with its value and its comment (from the YAML files, else the schema's
    source). `overrides` (other arguments) apply to the values."""
    overrides = list(overrides or [])
    cfg = compose(schema, name, overrides)
    command = name.replace("_", "-")
    doc = doc if doc is not None else sys.modules[schema.__module__].__doc__
    doc = (doc or "").strip().split("\n\n")[0].strip()
    out = [f"lw {command}: {doc}" if doc and not doc.startswith("`") else doc or f"lw {command}", ""]
    example = next((k for k, v, _ in _flat(cfg) if "." in k and isinstance(v, (int, float))
                    and not isinstance(v, bool)), "key.sub")
    out += [f"usage: lw {command} [key=value ...] [--cfg] [--help]",
            f"  key=value sets a config key (nested keys with dots, e.g. {example}=...); group=choice picks",
            "  a file of a config group; --cfg prints the resolved config instead of running.", ""]

    comments, group_comments = _yaml_comments(CONF_DIR / f"{name}.yaml")
    chosen = {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1] for o in overrides if "=" in o}
    group_lines = []
    for entry in _defaults(name):
        if isinstance(entry, str) and entry != "_self_":       # another config file, `file@package`
            file, _, package = entry.partition("@")
            if (CONF_DIR / f"{file}.yaml").is_file():
                for k, c in _yaml_comments(CONF_DIR / f"{file}.yaml", f"{package}." if package else "")[0].items():
                    comments.setdefault(k, c)
        elif isinstance(entry, dict):
            for group, choice in entry.items():
                if not (CONF_DIR / group).is_dir():
                    continue
                choice = chosen.get(group, choice)
                files = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
                group_lines.append((f"{group}={_fmt(choice)}", f"choices: {', '.join(files)}"
                                    + (f" ({group_comments[group]})" if group in group_comments else "")))
                chosen_file = CONF_DIR / group / f"{choice}.yaml"
                if choice is not None and chosen_file.is_file():
                    glob_ = "@package _global_" in chosen_file.read_text()
                    for k, c in _yaml_comments(chosen_file, "" if glob_ else f"{group}.")[0].items():
                        comments.setdefault(k, c)
    if group_lines:
        w = max(len(a) for a, _ in group_lines)
        out += [f"config groups (group=choice, files in lw/conf/<group>/):"]
        out += [f"  {a:<{w}}  {b}" for a, b in group_lines] + [""]

    rows = [(k, _fmt(v), comments.get(k) or c) for k, v, c in _flat(cfg)]
    kw = min(max(len(k) for k, _, _ in rows), 40)
    vw = min(max(len(v) for _, v, _ in rows), 24)
    out.append(f"config keys and their {'values with the arguments given' if overrides else 'defaults'} "
               f"(lw/conf/{name}.yaml; schema {schema.__module__}.{schema.__qualname__}):")
    for k, v, c in rows:
        if not c:
            out.append(f"  {k:<{kw}} = {v}")
            continue
        line = f"  {k:<{kw}} = {v:<{vw}}  # "
        hash_col = kw + vw + 7  # the column of the `#` when the value fits: wrapped lines continue there
        wrapped = textwrap.wrap(c, width=max(40, HELP_WIDTH - len(line))) or [""]
        out.append(line + wrapped[0])
        out += [" " * hash_col + "# " + more for more in wrapped[1:]]
    return "\n".join(out)
