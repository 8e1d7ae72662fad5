"""Reading and writing the text form of a CDI spec (JSON, or YAML which runtimes also accept)."""

import json
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import CDIError
from .models import Spec
from .validation import validate_spec


def _json_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _to_cdi_error(err: ValidationError) -> CDIError:
    errors = err.errors(include_url=False)
    first = errors[0]
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return CDIError(f"{first['msg']}{more}", _json_path(first["loc"]) or "spec")


def spec_from_dict(data: Mapping[str, Any]) -> Spec:
    """Build and validate a spec from its decoded JSON (camelCase keys)."""
    if not isinstance(data, Mapping):
        raise CDIError(f"must be a JSON object, not {type(data).__name__}", "spec")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as err:
        raise _to_cdi_error(err) from None
    return validate_spec(spec)


def parse_spec(text: str | bytes, *, yaml_format: bool = False) -> Spec:
    """Decode and validate a spec file's content."""
    try:
        data = yaml.safe_load(text) if yaml_format else json.loads(text)
    except (ValueError, yaml.YAMLError) as err:
        raise CDIError(f"not valid {'YAML' if yaml_format else 'JSON'}: {err}", "spec") from None
    return spec_from_dict(data)


def spec_to_dict(spec: Spec) -> dict[str, Any]:
    """The minimal JSON-ready form: camelCase keys, unset and empty fields left out."""
    return spec.model_dump(mode="json")


def spec_to_json(spec: Spec) -> str:
    """Deterministic JSON text (model field order, two-space indent, trailing newline)."""
    return json.dumps(spec_to_dict(spec), indent=2, ensure_ascii=False) + "\n"
