"""Config checks before the plan: the schema (defaults filled in). Replaced by the full loader checks."""

from __future__ import annotations

from .plan import ConfigError


def check_config(config: dict, files, schema_path) -> None:
    """Validate ``config`` against the schema, filling in its defaults; ConfigError names the key at fault."""
    from snakemake.utils import validate

    try:
        validate(config, schema=str(schema_path), set_default=True)
    except Exception as e:  # snakemake's WorkflowError
        raise ConfigError(str(e).splitlines()[0]) from None
