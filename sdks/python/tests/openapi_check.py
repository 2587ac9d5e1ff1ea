"""Compares the SDK with an OpenAPI document: every operation has a client method (sync and
async) with the right method, path, credential, parameters and body, every response schema has
a model with the same fields, required-ness and types, and every error code has its exception
class with the right status. ``problems(doc)`` lists each disagreement; none means in sync."""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from typing import Any, Dict, List, Optional, Set, Tuple, Union

from x402_gate import AsyncX402Client, X402Client
from x402_gate._operations import ADMIN, ADMIN_OR_KEY, EXCLUDED, KEY, NONE, OPERATIONS, OPTIONAL_KEY
from x402_gate.errors import ERROR_BODIES, ERROR_CLASSES, STATUS_CLASSES
from x402_gate.models import MODELS, Model, json_name

METHODS = ("get", "put", "post", "delete", "patch")
SCALARS = {"string": str, "integer": int, "boolean": bool, "number": float}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def placeholders(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


class Checker:
    def __init__(self, doc: Dict[str, Any]) -> None:
        self.doc = doc
        self.schemas: Dict[str, Any] = doc.get("components", {}).get("schemas", {})
        self.out: List[str] = []
        self.models_seen: Set[str] = set()

    def problem(self, text: str) -> None:
        self.out.append(text)

    # Schemas.

    def ref_name(self, schema: Dict[str, Any]) -> Optional[str]:
        ref = schema.get("$ref")
        return ref.rsplit("/", 1)[-1] if ref else None

    def flatten(self, name: str) -> Tuple[Dict[str, Any], Set[str]]:
        """A schema's properties and required names, with allOf parts merged."""
        schema = self.schemas.get(name)
        if schema is None:
            self.problem(f"schema {name} is referenced but not defined")
            return {}, set()
        props: Dict[str, Any] = {}
        required: Set[str] = set()
        for part in schema.get("allOf", [schema]):
            ref = self.ref_name(part)
            if ref:
                p, r = self.flatten(ref)
            else:
                p, r = part.get("properties", {}), set(part.get("required", []))
            props.update(p)
            required |= r
        return props, required

    def compare(self, schema: Dict[str, Any], tp: Any, where: str, required: bool = True) -> None:
        """That the Python type ``tp`` holds what ``schema`` describes."""
        ref = self.ref_name(schema)
        if ref and not {"properties", "allOf"} & self.schemas.get(ref, {}).keys():
            # A named scalar, such as a string enum (ReloadResult): compared as itself.
            return self.compare(self.schemas.get(ref, {}), tp, f"{where} ({ref})", required)
        if ref:
            model = MODELS.get(ref)
            if not (isinstance(tp, type) and issubclass(tp, Model)):
                self.problem(f"{where}: schema {ref} but the SDK has {tp!r}")
            elif model is None:
                self.problem(f"{where}: schema {ref} has no model in x402_gate.models")
            elif tp is not model:
                self.problem(f"{where}: schema {ref} is {model.__name__}, the SDK has {tp.__name__}")
            else:
                self.check_model(ref)
            return
        types = schema.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        nullable = "null" in types
        types = [t for t in types if t != "null"]
        optional = typing.get_origin(tp) is Union and type(None) in typing.get_args(tp)
        if optional:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0]
        if nullable and not optional:
            self.problem(f"{where}: may be null, but the SDK's type is not Optional")
        if optional and not nullable and required:
            self.problem(f"{where}: is required and never null, but the SDK's type is Optional")
        if len(types) != 1:
            self.problem(f"{where}: a schema this check does not know: {schema}")
            return
        (t,) = types
        if t in SCALARS:
            if tp is not SCALARS[t]:
                self.problem(f"{where}: {t} in the document, {tp!r} in the SDK")
        elif t == "array":
            if typing.get_origin(tp) is not list:
                self.problem(f"{where}: an array in the document, {tp!r} in the SDK")
            else:
                self.compare(schema.get("items", {}), typing.get_args(tp)[0], where + "[]")
        elif t == "object":
            if typing.get_origin(tp) is not dict:
                self.problem(f"{where}: an object in the document, {tp!r} in the SDK")
                return
            _, value = typing.get_args(tp)
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                self.compare(extra, value, where + "{}")
            elif schema.get("properties"):
                self.problem(f"{where}: an object with properties should be a model")
            elif value is not Any:
                self.problem(f"{where}: a free-form object in the document, {tp!r} in the SDK")
        else:
            self.problem(f"{where}: type {t} is not known to this check")

    def check_model(self, name: str) -> None:
        if name in self.models_seen:
            return
        self.models_seen.add(name)
        model = MODELS[name]
        props, required = self.flatten(name)
        parts = self.schemas.get(name, {}).get("allOf", [])
        free_form = any(
            p.get("type") == "object" and "properties" not in p and "$ref" not in p for p in parts
        )
        if free_form != bool(model.__rest__):
            self.problem(
                f"{name}: free-form fields beside the named ones: {free_form} in the document, "
                f"{bool(model.__rest__)} in {model.__name__} (its __rest__)"
            )
        fields = {
            json_name(f): f
            for f in dataclasses.fields(model)  # type: ignore[arg-type]
            if f.name != model.__rest__
        }
        hints = typing.get_type_hints(model, vars(sys.modules[model.__module__]))
        for prop in props.keys() - fields.keys():
            self.problem(f"{name}.{prop}: in the document, not in {model.__name__}")
        for prop in fields.keys() - props.keys():
            self.problem(f"{model.__name__}.{prop}: in the SDK, not in schema {name}")
        for prop in props.keys() & fields.keys():
            f = fields[prop]
            has_default = not (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            where = f"{name}.{prop}"
            if prop in required and has_default:
                self.problem(f"{where}: required in the document, has a default in the SDK")
            if prop not in required and not has_default:
                self.problem(f"{where}: may be absent in the document, required in the SDK")
            self.compare(props[prop], hints[f.name], where, required=prop in required)

    # Operations.

    def operations(self) -> Dict[str, Tuple[str, str, Dict[str, Any]]]:
        out = {}
        for path, item in self.doc.get("paths", {}).items():
            for method in METHODS:
                if method in item:
                    op = item[method]
                    out[op.get("operationId", f"{method} {path}")] = (method.upper(), path, op)
        return out

    def bound(self, cls: type) -> Dict[str, List[Any]]:
        out: Dict[str, List[Any]] = {}
        for name, fn in inspect.getmembers(cls, callable):
            op = getattr(fn, "__x402_operation__", None)
            if op is not None:
                out.setdefault(op.operation_id, []).append(fn)
        return out

    def auth_of(self, op: Dict[str, Any]) -> Set[str]:
        schemes = set()
        for requirement in op.get("security") or []:
            schemes |= set(requirement)
        if schemes == {"admin"}:
            return {ADMIN}
        if schemes == {"api_key"}:
            return {KEY}
        if schemes == {"admin", "api_key"}:
            return {ADMIN_OR_KEY}
        if not schemes:
            return {NONE, OPTIONAL_KEY}
        return set()

    def check_method(self, op_id: str, spec: Dict[str, Any], fn: Any) -> None:
        where = f"{fn.__qualname__} ({op_id})"
        hints = typing.get_type_hints(fn)
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
        path_params = [p for p in spec.get("parameters", []) if p.get("in") == "path"]
        positional = params[: len(path_params)]
        for p, sp in zip(positional, path_params):
            if p.kind is not p.POSITIONAL_OR_KEYWORD or p.default is not p.empty:
                self.problem(f"{where}: path parameter {sp['name']} should come first, required")
        rest = {p.name: p for p in params[len(path_params):]}

        expected: Dict[str, Tuple[Dict[str, Any], bool]] = {}
        for sp in spec.get("parameters", []):
            if sp.get("in") == "query":
                expected[snake(sp["name"])] = (sp.get("schema", {}), bool(sp.get("required")))
            elif sp.get("in") == "header":
                name = sp["name"].lower().replace("-", "_")
                expected[name] = (sp.get("schema", {}), bool(sp.get("required")))
        body = getattr(fn, "__x402_body__", None)
        content = spec.get("requestBody", {}).get("content", {}).get("application/json", {})
        body_schema = content.get("schema")
        if body_schema is None:
            if body:
                self.problem(f"{where}: the SDK sends {body}, the document takes no body")
        elif body_schema.get("type") == "object" and "properties" not in body_schema:
            # A free-form object (a route's fields): the method takes it whole, as `spec`.
            if body != "object":
                self.problem(f"{where}: the document's body is a free-form object, the SDK sends {body}")
            expected["spec"] = (body_schema, True)
        else:
            ref = self.ref_name(body_schema)
            refs = {ref} if ref else set()
            if ref and "oneOf" in self.schemas.get(ref, {}):
                refs = {self.ref_name(s) for s in self.schemas[ref]["oneOf"]}
            if body not in refs:
                self.problem(f"{where}: the document's body is one of {sorted(refs)}, the SDK sends {body}")
            else:
                props, required = self.flatten(body)
                for prop, s in props.items():
                    expected[snake(prop)] = (s, prop in required)
        for name in expected.keys() - rest.keys():
            self.problem(f"{where}: no parameter for `{name}`")
        for name in rest.keys() - expected.keys():
            self.problem(f"{where}: parameter `{name}` is not in the document")
        for name in expected.keys() & rest.keys():
            s, req = expected[name]
            p = rest[name]
            if req and p.default is not p.empty:
                self.problem(f"{where}: `{name}` is required in the document, optional in the SDK")
            if not req and p.default is p.empty:
                self.problem(f"{where}: `{name}` is optional in the document, required in the SDK")
            self.compare(s, hints[name], f"{where}: parameter {name}", required=req)

        ok = [(code, r) for code, r in spec.get("responses", {}).items() if code.startswith("2")]
        if len(ok) != 1:
            self.problem(f"{where}: expected one 2xx answer, the document has {[c for c, _ in ok]}")
            return
        schema = ok[0][1].get("content", {}).get("application/json", {}).get("schema")
        if ok[0][0] == "204" and schema is None:
            if hints["return"] is not type(None):
                self.problem(f"{where}: answers 204 (no body), the SDK returns {hints['return']!r}")
            return
        if schema is None:
            self.problem(f"{where}: the 2xx answer has no JSON schema")
            return
        self.compare(schema, hints["return"], f"{where}: answer")

    def check_operations(self) -> None:
        spec_ops = self.operations()
        for op_id in EXCLUDED:
            if op_id not in spec_ops:
                self.problem(f"{op_id}: excluded from the SDK, but no longer in the document")
        spec_ops = {k: v for k, v in spec_ops.items() if k not in EXCLUDED}
        for op_id, (method, path, spec) in spec_ops.items():
            mine = OPERATIONS.get(op_id)
            if mine is None:
                self.problem(f"{method} {path} ({op_id}): no operation in the SDK")
                continue
            if (mine.method, placeholders(mine.path)) != (method, placeholders(path)):
                self.problem(f"{op_id}: {method} {path} in the document, {mine.method} {mine.path} in the SDK")
            if mine.auth not in self.auth_of(spec):
                self.problem(f"{op_id}: security {spec.get('security')} in the document, {mine.auth} in the SDK")
        for op_id in OPERATIONS.keys() - spec_ops.keys():
            self.problem(f"{op_id}: in the SDK, not in the document")
        for cls in (X402Client, AsyncX402Client):
            bound = self.bound(cls)
            for op_id in spec_ops.keys() - bound.keys():
                self.problem(f"{cls.__name__}: no method for {op_id}")
            for op_id, fns in bound.items():
                if op_id in spec_ops:
                    for fn in fns:
                        self.check_method(op_id, spec_ops[op_id][2], fn)
        sync = {n: inspect.signature(f) for n, f in inspect.getmembers(X402Client, callable) if not n.startswith("_")}
        asyn = {n: inspect.signature(f) for n, f in inspect.getmembers(AsyncX402Client, callable) if not n.startswith("_")}
        for name in (sync.keys() ^ asyn.keys()) - {"close", "aclose"}:
            self.problem(f"{name}: only one of X402Client and AsyncX402Client has it")
        for name in sync.keys() & asyn.keys():
            if list(sync[name].parameters) != list(asyn[name].parameters):
                self.problem(f"{name}: X402Client and AsyncX402Client take different parameters")

    # Errors.

    def check_errors(self) -> None:
        error = self.schemas.get("ErrorBody", {}).get("properties", {}).get("error", {})
        codes = error.get("enum")
        statuses = error.get("x-error-statuses", {})
        if not codes:
            self.problem("ErrorBody.error has no enum of codes")
            return
        for code in set(codes) - ERROR_CLASSES.keys():
            self.problem(f"error code `{code}`: no exception class")
        for code in ERROR_CLASSES.keys() - set(codes):
            self.problem(f"exception for `{code}`: not a code of the document")
        for code in set(codes) & ERROR_CLASSES.keys():
            if statuses.get(code) != ERROR_CLASSES[code].status:
                self.problem(
                    f"error code `{code}`: status {statuses.get(code)} in the document, "
                    f"{ERROR_CLASSES[code].status} in {ERROR_CLASSES[code].__name__}"
                )
        for op_id, (method, path, spec) in self.operations().items():
            if op_id in EXCLUDED:
                continue
            for status, r in spec.get("responses", {}).items():
                schema = r.get("content", {}).get("application/json", {}).get("schema", {})
                ref = self.ref_name(schema)
                if status.startswith("2") or ref is None or ref in MODELS:
                    continue  # an answer (or /ready's and a reload's reports)
                if int(status) not in STATUS_CLASSES:
                    self.problem(f"{method} {path}: answers {status}, which has no exception class")
                if ref != "ErrorBody" and ref not in ERROR_BODIES:
                    self.problem(f"{method} {path}: answers {status} with {ref}, not an error body the SDK reads")
        # Error bodies with more than `error` and `message`: each field is an attribute.
        for name, (cls, attrs) in ERROR_BODIES.items():
            props, required = self.flatten(name)
            extra = props.keys() - {"error", "message"}
            for prop in extra ^ attrs.keys():
                self.problem(f"{name}.{prop}: the document and {cls.__name__}'s attributes disagree")
            for prop in extra & attrs.keys():
                self.compare(props[prop], attrs[prop], f"{name}.{prop}", required=prop in required)


def problems(doc: Dict[str, Any]) -> List[str]:
    c = Checker(doc)
    c.check_operations()
    c.check_errors()
    unused = set(MODELS) - c.models_seen
    for name in sorted(unused):
        c.problem(f"model {MODELS[name].__name__} ({name}) is not an answer of any operation")
    return c.out
