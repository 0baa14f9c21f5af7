"""Load business-rule YAML into pydantic models, failing loudly with the file and key.

A growth PM edits these files; a typo must stop the load with a message that points at the
exact file and key, not surface later as a wrong trigger.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""

    def __init__(self, path: Path | str, key: str, message: str):
        self.path = str(path)
        self.key = key
        super().__init__(f"{path}: {key}: {message}")


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors (a misspelt key must not be ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _key_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def load_config(path: Path | str, model: type[M]) -> M:
    """Parse `path` as YAML and validate it as `model`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, "<file>", f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "<file>"
        raise ConfigError(path, where, f"invalid YAML: {exc}") from exc
    if data is None:
        raise ConfigError(path, "<root>", "file is empty")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(path, _key_path(first["loc"]), first["msg"]) from exc


def config_path(name: str, config_dir: Path | str | None = None) -> Path:
    """Where config file `name` comes from: the override folder if it has it, else the default."""
    override = config_dir or os.environ.get("PLG_CONFIG_DIR")
    if override and (Path(override) / name).exists():
        return Path(override) / name
    return PACKAGE_CONFIG_DIR / name
