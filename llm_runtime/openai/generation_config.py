"""Where a served request's sampling defaults come from (vLLM's `--generation-config` and
`--override-generation-config`): a field the request leaves out takes the model's recommended value, then
SamplingParams' documented default.

    auto  the model's recommended sampling, as its built folder records it (the default)
    none  SamplingParams' documented defaults only (temperature 1.0, as OpenAI)
    FILE  a JSON file of fields (a Hugging Face generation_config.json, or a folder that holds one)
Overrides (a JSON object of fields) win over all three.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llm_runtime.errors import ParameterError
from llm_runtime.model_builder.recommended_sampling import FIELDS, GENERATION_CONFIG
from llm_runtime.sampling.params import SamplingParams

SOURCES = ("auto", "none")  # or a file


@dataclass(frozen=True)
class GenerationConfig:
    source: str = "auto"  # "auto", "none" or the file it was read from
    fields: dict = field(default_factory=dict)  # FILE: the file's fields
    overrides: dict = field(default_factory=dict)

    @classmethod
    def of(cls, source: str = "auto", overrides: str | dict | None = None) -> GenerationConfig:
        """From the flags' values; ValueError naming the flag on a bad file, field or value."""
        fields = {} if source in SOURCES else _file_fields(Path(source))
        if isinstance(overrides, str):
            try:
                overrides = json.loads(overrides)
            except ValueError as e:
                raise ValueError(f"--override-generation-config is not valid JSON: {e}") from None
        overrides = _checked(overrides or {}, "--override-generation-config")
        return cls(source, fields, overrides)

    def defaults(self, recommended: dict) -> dict:
        """The fields a request that leaves them out gets, for a model that recommends `recommended`."""
        base = recommended if self.source == "auto" else {} if self.source == "none" else self.fields
        return {**base, **self.overrides}


def _file_fields(path: Path) -> dict:
    file = path / GENERATION_CONFIG if path.is_dir() else path
    try:
        obj = json.loads(file.read_text())
    except OSError as e:
        raise ValueError(f"--generation-config: {SOURCES[0]}, {SOURCES[1]} or a JSON file; cannot read {file}: "
                         f"{e.strerror}") from None
    except ValueError as e:
        raise ValueError(f"--generation-config {file} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"--generation-config {file} must hold a JSON object")
    return _checked({k: v for k, v in obj.items() if k in FIELDS}, f"--generation-config {file}")


def _checked(fields, flag: str) -> dict:
    """Only the sampling fields a model may recommend, with values SamplingParams accepts."""
    if not isinstance(fields, dict):
        raise ValueError(f"{flag} must be a JSON object of fields")
    if unknown := sorted(set(fields) - set(FIELDS)):
        raise ValueError(f"{flag}: {', '.join(unknown)} cannot be set here (fields: {', '.join(FIELDS)})")
    try:
        SamplingParams(**fields)
    except (ParameterError, TypeError) as e:
        raise ValueError(f"{flag}: {e}") from None
    return dict(fields)
