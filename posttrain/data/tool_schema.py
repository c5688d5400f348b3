"""Tool (function) specifications: validation and conversion to JSON Schema.

A tool spec is a JSON-schema-like function description, as BFCL and the OpenAI API write them::

    {"name": "get_weather", "description": "Current weather in a city.",
     "parameters": {"type": "object",
                    "properties": {"city": {"type": "string", "description": "..."}},
                    "required": ["city"]}}

The OpenAI wrapper ``{"type": "function", "function": {...}}`` is unwrapped. BFCL's type names (``dict``,
``float``, ``tuple``, ``any``, Python-ish ``integer``) are kept as they are, because BFCL's checker reads
them (:mod:`posttrain.tools.bfcl`); :func:`to_json_schema` maps them to JSON Schema for prompts.
Validated specs always have ``parameters.properties`` and ``parameters.required`` (``[]`` when absent).
"""
from __future__ import annotations

import copy
from typing import Any

from posttrain.errors import DataError

# BFCL / Python type names -> JSON Schema; JSON Schema's own names map to themselves.
JSON_TYPES = {
    "dict": "object", "object": "object", "float": "number", "number": "number", "double": "number",
    "integer": "integer", "int": "integer", "long": "integer", "string": "string", "str": "string",
    "char": "string", "boolean": "boolean", "bool": "boolean", "array": "array", "list": "array",
    "tuple": "array", "any": None, "null": "null",
}


def _fail(msg: str, file, line, fld) -> DataError:
    return DataError(msg, file=file, line=line, field=fld)


def validate_tool(spec: Any, *, file: str | None = None, line: int | None = None,
                  fld: str = "tools[0]") -> dict:
    """A validated deep copy of one tool spec (module docstring); DataError naming the bad field."""
    if isinstance(spec, dict) and spec.get("type") == "function" and isinstance(spec.get("function"), dict):
        spec, fld = spec["function"], f"{fld}.function"
    if not isinstance(spec, dict):
        raise _fail(f"expected a function spec object, got {type(spec).__name__}", file, line, fld)
    spec = copy.deepcopy(spec)
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(f"expected a non-empty string, got {name!r}", file, line, f"{fld}.name")
    desc = spec.setdefault("description", "")
    if not isinstance(desc, str):
        raise _fail(f"expected a string, got {type(desc).__name__}", file, line, f"{fld}.description")
    params = spec.setdefault("parameters", {"type": "object", "properties": {}})
    where = f"{fld}.parameters"
    if not isinstance(params, dict):
        raise _fail(f"expected an object, got {type(params).__name__}", file, line, where)
    if params.get("type", "object") not in ("object", "dict"):
        raise _fail(f"parameters must be of type 'object' (or BFCL's 'dict'), got {params.get('type')!r}",
                    file, line, f"{where}.type")
    props = params.setdefault("properties", {})
    if not isinstance(props, dict):
        raise _fail(f"expected an object of parameters, got {type(props).__name__}", file, line,
                    f"{where}.properties")
    for pname, p in props.items():
        if not isinstance(p, dict):
            raise _fail(f"expected a parameter schema object, got {type(p).__name__}", file, line,
                        f"{where}.properties.{pname}")
        if "type" in p and not isinstance(p["type"], (str, list)):
            raise _fail(f"expected a type name, got {p['type']!r}", file, line,
                        f"{where}.properties.{pname}.type")
    required = params.setdefault("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _fail(f"expected a list of parameter names, got {required!r}", file, line, f"{where}.required")
    unknown = [r for r in required if r not in props]
    if unknown:
        raise _fail(f"required parameter(s) {unknown} not in properties ({sorted(props)})", file, line,
                    f"{where}.required")
    return spec


def validate_tools(tools: Any, *, file: str | None = None, line: int | None = None,
                   fld: str = "tools") -> list[dict]:
    """A validated list of tool specs with distinct names."""
    if not isinstance(tools, list):
        raise _fail(f"expected a list of function specs, got {type(tools).__name__}", file, line, fld)
    out = [validate_tool(t, file=file, line=line, fld=f"{fld}[{i}]") for i, t in enumerate(tools)]
    seen: dict[str, int] = {}
    for i, t in enumerate(out):
        if t["name"] in seen:
            raise _fail(f"duplicate function name {t['name']!r} (also {fld}[{seen[t['name']]}])", file, line,
                        f"{fld}[{i}].name")
        seen[t["name"]] = i
    return out


def find_tool(tools: list[dict], name: str) -> dict | None:
    return next((t for t in tools if t["name"] == name), None)


_SUBSCHEMA = ("items", "additionalProperties", "parameters")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def _schema(node: Any) -> Any:
    """Map type names in a schema node and its subschemas only: values such as ``default`` or ``enum``
    are data, kept as they are."""
    if not isinstance(node, dict):
        return copy.deepcopy(node)
    out = {}
    for k, v in node.items():
        if k == "type" and isinstance(v, str):
            mapped = JSON_TYPES.get(v, v)
            if mapped is not None:  # BFCL's "any": JSON Schema says any by leaving the type out
                out[k] = mapped
        elif k == "properties" and isinstance(v, dict):
            out[k] = {p: _schema(s) for p, s in v.items()}
        elif k in _SUBSCHEMA:
            out[k] = _schema(v)
        elif k in _SCHEMA_LISTS and isinstance(v, list):
            out[k] = [_schema(x) for x in v]
        else:
            out[k] = copy.deepcopy(v)
    return out


def to_json_schema(spec: dict) -> dict:
    """The spec with JSON Schema type names (``dict`` -> ``object``, ``float`` -> ``number``, ``tuple`` ->
    ``array``, ``any`` -> no type), for showing to a model; the spec itself is unchanged."""
    return _schema(spec)
