"""Configuration files: read with their line numbers, duplicate keys refused, checked against the schema.

Snakemake reads config files itself and keeps the last of two equal keys without a word, and
``snakemake.utils.validate`` reports one schema error as the whole schema and config (10 to 473 lines).
Here every problem is one line that names the file and line (where the key was written), the key path,
what was found and what was expected::

    my.yaml:49: duplicate key cell_lines.synthA (first at line 33): YAML keeps only the last one
    my.yaml:82: training.max_stepz: unknown key (did you mean max_steps?)
    my.yaml:83: training.lr: found 'fast' (a string), expected a number
    my.yaml:44: cell_lines.synthB.signals.h3k27ac: found a mapping with keys url, expected one of: encode;
                4dn; url + kind; encode_experiment + select + kind

:func:`check_config` is what the workflow calls (``common.smk``) with the config Snakemake loaded and
the files it loaded it from (``workflow.configfiles``); it fills the schema's defaults in the same way
as ``validate(config, schema, set_default=True)``. ``python -m prism.config FILE...`` checks config
files outside Snakemake, YAML syntax included (Snakemake reports a syntax error in a ``--configfile``
without file, line or column, and before any code of the workflow runs).
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

import yaml

from .plan import ConfigError

__all__ = ["ConfigError", "check_config", "exit_on_yaml_error", "read_config_file", "schema_errors"]

#: where each key was written: key path (tuple of keys and list indices) -> (file, line)
Locations = dict


def _dotted(path) -> str:
    """cell_lines.K562.signals.h3k27ac, experiments.table1.rows["Caduceus w/ signals"].K, seeds[1]."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", str(p)) and "." not in str(p):
            out += f".{p}" if out else str(p)
        else:
            out += f'["{p}"]'
    return out or "(top level)"


# ---------------------------------------------------------------- reading


def read_config_file(path) -> tuple[dict, Locations]:
    """(config, locations) of one YAML (or JSON) config file.

    Raises ConfigError, one line each: a syntax error (file:line:column), a duplicate key anywhere in
    the file (file:line of the second, with the line of the first), a file that is not a mapping.
    """
    data, locations, duplicates = _read(path)
    if duplicates:
        raise ConfigError("\n".join(duplicates))
    return data, locations


def _read(path) -> tuple[dict, Locations, list[str]]:
    """(config, locations, one line per duplicate key); ConfigError if the file cannot be parsed."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        data, locations, duplicates = _compose(text, path, _FAST_LOADER)
    except yaml.YAMLError as exc:
        try:  # the pure-Python parser words its errors as PyYAML documents them
            data, locations, duplicates = _compose(text, path, yaml.SafeLoader)
        except yaml.YAMLError as exc2:
            exc = exc2
        raise ConfigError(_yaml_error(path, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, not {_kind(data)}")
    return data, locations, duplicates


#: libyaml's loader where PyYAML was built with it: 10x faster than the pure-Python one on these files
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose(text: str, path: str, loader_class) -> tuple[dict, Locations, list[str]]:
    loader = loader_class(text)
    locations, duplicates = {}, []
    try:
        node = loader.get_single_node()
        if node is not None:
            _walk(node, (), path, locations, duplicates)
        data = loader.construct_document(node) if node is not None else {}
    finally:
        loader.dispose()
    return data, locations, duplicates


def _walk(node, path: tuple, file: str, locations: Locations, duplicates: list) -> None:
    """Record where every key is written; collect duplicate keys (YAML itself keeps the last one)."""
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor" merges, it is no key
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                duplicates.append(f"{file}:{line}: duplicate key {_dotted(path + (key,))} (first at line {seen[key]}): "
                                  f"YAML keeps only the last one")
            else:
                seen[key] = line
            locations[path + (key,)] = (file, line)
            _walk(value_node, path + (key,), file, locations, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            locations[path + (i,)] = (file, item.start_mark.line + 1)
            _walk(item, path + (i,), file, locations, duplicates)


def _yaml_error(path: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    context = getattr(exc, "context", None)
    cmark = getattr(exc, "context_mark", None)
    if context and cmark is not None:
        problem += f" ({' '.join(context.split())} at line {cmark.line + 1})"
    return f"{where}: YAML syntax error: {problem}"


# ---------------------------------------------------------------- schema


def _validator(schema: dict):
    """A Draft 2020-12 validator that fills in defaults as it goes, as snakemake.utils.validate does
    (each ``properties`` entry's ``default`` set before that mapping is validated, nested ones too)."""
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        for name, sub in properties.items():
            if "default" in sub and isinstance(instance, dict):
                instance.setdefault(name, sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})(schema)


def schema_errors(config: dict, schema, locations: Locations | None = None) -> list[str]:
    """Fill the schema's defaults into `config` (in place) and return one line per schema error.

    schema: the schema (dict) or its YAML/JSON file. locations: from :func:`read_config_file`, to start
    each line with the file and line where the key at fault (or the nearest key above it) was written.
    """
    if not isinstance(schema, dict):
        schema = yaml.load(Path(schema).read_text(encoding="utf-8"), Loader=_FAST_LOADER)
    locations = locations or {}
    files = {f: i for i, f in enumerate(dict.fromkeys(f for f, _ in locations.values()))}
    found = {}
    for error in _validator(schema).iter_errors(config):
        for path, text in _describe(error):
            where = _location(path, locations)
            # in the order the lines stand in the files (later files last), then by key
            order = (files[where[0]], where[1]) if where else (len(files), 0)
            line = f"{where[0]}:{where[1]}: " if where else ""
            found.setdefault(f"{line}{_dotted(path)}: {text}", (order, [str(p) for p in path]))
    return sorted(found, key=found.get)


def _location(path: tuple, locations: Locations) -> tuple[str, int] | None:
    """(file, line) where the key at `path`, or the nearest key above it, was written."""
    for k in range(len(path), 0, -1):
        if tuple(path[:k]) in locations:
            return locations[tuple(path[:k])]
    return None


_TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a string", "array": "a list",
               "object": "a mapping", "boolean": "true or false", "null": "null"}


_PLURAL = {"integer": "integers", "number": "numbers", "string": "strings", "array": "lists", "object": "mappings"}


def _kind(value) -> str:
    if isinstance(value, bool):
        return "true or false"
    for t, py in (("integer", int), ("number", float), ("string", str), ("array", list), ("object", dict)):
        if isinstance(value, py):
            return _TYPE_WORDS[t]
    return "null" if value is None else type(value).__name__


def _show(value) -> str:
    """What was found, short: 'abc' (a string), 3.5 (a number), a mapping with keys url, kind."""
    if isinstance(value, dict):
        return f"a mapping with keys {', '.join(map(str, value))}" if value else "an empty mapping"
    if isinstance(value, list):
        return f"a list of {len(value)}" if value else "an empty list"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({_kind(value)})" if isinstance(value, str) else text


def _expected(schema) -> str:
    """A schema in a few words: 'all', a list of strings, keys url + kind."""
    if not isinstance(schema, dict):
        return str(schema)
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(map(repr, schema["enum"]))
    if "required" in schema and set(schema) <= {"required", "type", "properties"}:
        return " + ".join(schema["required"])
    types = schema.get("type")
    words = " or ".join(_TYPE_WORDS.get(t, t) for t in ([types] if isinstance(types, str) else types or []))
    items = schema.get("items")
    if types == "array" and isinstance(items, dict) and items.get("type") in _PLURAL:
        words = f"a list of {_PLURAL[items['type']]}"
    return words or "something else"


def _describe(error) -> list[tuple[tuple, str]]:
    """(key path, what is wrong) lines of one jsonschema error."""
    path = tuple(error.absolute_path)
    v, vv, inst = error.validator, error.validator_value, error.instance
    if "propertyNames" in error.schema_path:
        return [(path, f"key {inst!r} is not allowed: keys here must match {error.schema.get('pattern', vv)}")]
    if v == "additionalProperties" and vv is False:
        allowed = list(error.schema.get("properties", {}))
        pattern = [re.compile(p) for p in error.schema.get("patternProperties", {})]
        out = []
        for key in inst:
            if key in allowed or any(p.search(key) for p in pattern):
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]}?" if close else f"expected one of {', '.join(allowed)}"
            out.append((path + (key,), f"unknown key ({hint})"))
        return out or [(path, " ".join(error.message.split()))]
    if v == "required":
        return [(path, f"missing key {k!r}") for k in vv if isinstance(inst, dict) and k not in inst]
    if v in ("oneOf", "anyOf"):
        return _describe_alternatives(error, path)
    what = {
        "type": lambda: f"expected {' or '.join(_TYPE_WORDS.get(t, t) for t in ([vv] if isinstance(vv, str) else vv))}",
        "enum": lambda: "expected one of " + ", ".join(map(repr, vv)),
        "const": lambda: f"expected {vv!r}",
        "pattern": lambda: f"expected a string matching {vv}",
        "minimum": lambda: f"expected at least {vv}",
        "maximum": lambda: f"expected at most {vv}",
        "exclusiveMinimum": lambda: f"expected more than {vv}",
        "exclusiveMaximum": lambda: f"expected less than {vv}",
        "multipleOf": lambda: f"expected a multiple of {vv}",
        "minItems": lambda: f"expected at least {vv} item{'s' * (vv != 1)}",
        "maxItems": lambda: f"expected at most {vv} item{'s' * (vv != 1)}",
        "minProperties": lambda: f"expected at least {vv} key{'s' * (vv != 1)}",
        "uniqueItems": lambda: "expected no item twice",
    }.get(v)
    if what is None:
        return [(path, " ".join(error.message.split()))]
    return [(path, f"found {_show(inst)}, {what()}")]


def _describe_alternatives(error, path: tuple) -> list[tuple[tuple, str]]:
    """oneOf / anyOf: the one alternative the value was meant as, if that is clear, else all of them."""
    options = "; ".join(_expected(s) for s in error.validator_value)
    if not error.context:  # valid under several of oneOf
        return [(path, f"found {_show(error.instance)}, which fits more than one of: {options} (give exactly one)")]
    by_branch: dict[int, list] = {}
    for sub in error.context:
        by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
    # an alternative failing only on the value's own kind (its type, constant or keys) was not meant
    meant = [b for b, subs in by_branch.items()
             if any(sub.relative_path or sub.validator not in ("type", "const", "required", "enum") for sub in subs)]
    if len(meant) == 1:
        return [line for sub in by_branch[meant[0]] for line in _describe(sub)]
    return [(path, f"found {_show(error.instance)}, expected one of: {options}")]


# ---------------------------------------------------------------- the workflow's check


def check_config(config: dict, configfiles, schema) -> None:
    """Check the config Snakemake loaded from `configfiles` (in that order) against `schema`.

    Re-reads each file to refuse duplicate keys and to know where each key was written; fills the
    schema's defaults into `config` (as snakemake.utils.validate(set_default=True)); raises ConfigError
    with one line per problem.
    """
    locations: Locations = {}
    problems = []
    for f in configfiles:
        try:
            _, locs, duplicates = _read(f)
        except ConfigError as exc:
            problems += str(exc).splitlines()
            continue
        locations.update(locs)
        problems += duplicates
    problems += schema_errors(config, schema, locations)
    if problems:
        raise ConfigError("\n".join(problems))


def exit_on_yaml_error(path) -> None:
    """For a Snakefile, before its ``configfile:`` line: a YAML syntax error or duplicate key in `path`
    (when it exists) stops with one line naming the file, line and column. Snakemake's own message
    ("Config file is not valid JSON or YAML") names none of them."""
    if Path(path).exists():
        try:
            read_config_file(path)
        except ConfigError as exc:
            raise SystemExit("\n".join(f"config error: {line}" for line in str(exc).splitlines())) from None


def load_configs(paths) -> tuple[dict, Locations]:
    """The config of several files merged as Snakemake merges them (later files update earlier ones,
    mapping by mapping), and where each key was written."""
    config: dict = {}
    locations: Locations = {}
    problems = []
    for f in paths:
        try:
            data, locs = read_config_file(f)
        except ConfigError as exc:
            problems += str(exc).splitlines()
            continue
        _update(config, data)
        locations.update(locs)
    if problems:
        raise ConfigError("\n".join(problems))
    return config, locations


def _update(config: dict, other: dict) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            _update(config[key], value)
        else:
            config[key] = value


DEFAULT_SCHEMA = Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml"


def main(argv=None) -> int:
    """python -m prism.config [--schema SCHEMA] CONFIG... : one line per problem, exit status 1 if any."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m prism.config", description=main.__doc__)
    ap.add_argument("configs", nargs="+", help="config files, in the order Snakemake reads them")
    ap.add_argument("--schema", default=str(DEFAULT_SCHEMA), help="schema (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        config, locations = load_configs(args.configs)
        problems = schema_errors(config, args.schema, locations)
        if problems:
            raise ConfigError("\n".join(problems))
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"config error: {line}", file=sys.stderr)
        return 1
    print(f"{', '.join(args.configs)}: no problem found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
