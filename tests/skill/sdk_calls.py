"""Check the E2B SDK calls of a code snippet against the installed SDK, without running it.

The checker follows simple data flow in a snippet (`x = Sandbox.create(...)`, `with ... as x`,
`x.files`, builder chains like `Template().from_python_image(...).pip_install(...)`), resolves each
call it can to the SDK function it reaches, and binds the call's arguments to that function's
signature with `inspect.Signature.bind`. Keyword arguments swallowed by `**opts: Unpack[ApiParams]`
must be keys of that TypedDict, so a misspelled or removed option (`auto_pause=True`) fails.

It also rejects known traps: constructing `Sandbox(...)` directly, a dict as `Sandbox.list(query=...)`,
and MCP server names or settings that are not in the SDK's own catalogue.

Calls it cannot resolve (anything not from `e2b` / `e2b_code_interpreter`, `**kwargs` expansion,
objects of unknown type) are skipped, never guessed.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any

SDK_MODULES = ("e2b", "e2b_code_interpreter")


@dataclass
class Report:
    """What a check found: calls bound successfully and problems."""

    bound: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Instance:
    cls: type


@dataclass(frozen=True)
class _Class:
    cls: type


@dataclass(frozen=True)
class _Callable:
    func: Any  # the function whose signature describes the call
    needs_self: bool  # bind a placeholder for `self`
    label: str
    owner: type | None = None  # the class the attribute was looked up on


_UNKNOWN = None


def _sdk_module(name: str) -> bool:
    return name in SDK_MODULES or name.startswith(tuple(m + "." for m in SDK_MODULES))


def _raw_attr(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


def _is_class_method_variant(raw: Any) -> bool:
    return type(raw).__name__ == "class_method_variant" and hasattr(raw, "class_method_name")


def _resolve_annotation(func: Any, annotation: Any, owner: type | None) -> Any:
    """Turn a return annotation into _Instance / _Class / None."""
    if annotation is inspect.Signature.empty or annotation is None:
        return _UNKNOWN
    if isinstance(annotation, str):
        text = annotation.strip("'\"")
        if text == "Self":
            return _Instance(owner) if owner else _UNKNOWN
        scope = dict(getattr(func, "__globals__", {}))
        try:
            annotation = eval(text, scope)  # names from the SDK module that defines the function
        except Exception:
            return _UNKNOWN
    if annotation is typing.Self:
        return _Instance(owner) if owner else _UNKNOWN
    origin = typing.get_origin(annotation)
    if origin is not None and origin is not typing.Union:
        annotation = origin
    if isinstance(annotation, type) and annotation.__module__.split(".")[0] in SDK_MODULES:
        return _Instance(annotation)
    return _UNKNOWN


def _typed_dict_keys(annotation: Any, func: Any) -> set[str] | None:
    """Keys allowed by a `**opts: Unpack[SomeTypedDict]` parameter, or None if not such a parameter."""
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, dict(getattr(func, "__globals__", {})))
        except Exception:
            return None
    if typing.get_origin(annotation) is not typing.Unpack:
        return None
    (td,) = typing.get_args(annotation)
    return (
        set(getattr(td, "__annotations__", {}))
        | set(getattr(td, "__required_keys__", set()))
        | set(getattr(td, "__optional_keys__", set()))
    )


def mcp_catalogue() -> dict[str, Any]:
    """The SDK's MCP server catalogue: name -> settings TypedDict (or a plain dict type)."""
    import e2b

    return typing.get_type_hints(typing.get_args(e2b.McpServer)[0], include_extras=True)


def _unwrap_not_required(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.NotRequired,):
        return typing.get_args(hint)[0], True
    if typing.get_origin(hint) in (typing.Required,):
        return typing.get_args(hint)[0], False
    return hint, False


def check_mcp_literal(node: ast.Dict) -> list[str]:
    """Problems with an `mcp={...}` dict literal, judged by the SDK's catalogue."""
    from e2b import GitHubMcpServerConfig

    problems: list[str] = []
    catalogue = mcp_catalogue()
    for key_node, value_node in zip(node.keys, node.values, strict=True):
        if not isinstance(key_node, ast.Constant) or not isinstance(key_node.value, str):
            continue
        key = key_node.value
        if key.startswith("github/"):
            if len(key.split("/")) != 3:
                problems.append(f"MCP key {key!r} must look like 'github/<owner>/<repo>'")
                continue
            settings_type: Any = GitHubMcpServerConfig
        elif key not in catalogue:
            problems.append(f"MCP server {key!r} is not in the SDK's catalogue")
            continue
        else:
            settings_type, _ = _unwrap_not_required(catalogue[key])
        if not isinstance(value_node, ast.Dict):
            continue
        given = {k.value for k in value_node.keys if isinstance(k, ast.Constant)}
        if typing.get_origin(settings_type) is dict or settings_type is dict:
            continue  # free-form settings
        fields = typing.get_type_hints(settings_type, include_extras=True)
        required = set()
        for name, hint in fields.items():
            _, optional = _unwrap_not_required(hint)
            if not optional and name in getattr(settings_type, "__required_keys__", set(fields)):
                required.add(name)
        if settings_type is GitHubMcpServerConfig:
            required = {"run_cmd"}
        unknown = given - set(fields)
        if unknown:
            problems.append(f"MCP server {key!r}: unknown settings {sorted(unknown)} (known: {sorted(fields)})")
        missing = required - given
        if missing:
            problems.append(f"MCP server {key!r}: missing settings {sorted(missing)}")
    return problems


class _Checker(ast.NodeVisitor):
    def __init__(self) -> None:
        self.names: dict[str, Any] = {}
        self.report = Report()

    # ---------------------------------------------------------------- imports and assignments

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if _sdk_module(alias.name):
                module = importlib.import_module(alias.name)
                self.names[(alias.asname or alias.name).split(".")[0]] = (
                    module if alias.asname else importlib.import_module(alias.name.split(".")[0])
                )

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if not node.module or not _sdk_module(node.module):
            return
        module = importlib.import_module(node.module)
        for alias in node.names:
            value = getattr(module, alias.name, _UNKNOWN)
            if value is _UNKNOWN:
                self.report.problems.append(f"line {node.lineno}: {node.module} has no {alias.name!r}")
                continue
            self.names[alias.asname or alias.name] = value

    def _bind_target(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            if value is _UNKNOWN:
                self.names.pop(target.id, None)
            else:
                self.names[target.id] = value

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        value = self.infer(node.value)
        for target in node.targets:
            self._bind_target(target, value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self._bind_target(node.target, self.infer(node.value))

    def _visit_with(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self._bind_target(item.optional_vars, self.infer(item.context_expr))
        for stmt in node.body:
            self.visit(stmt)

    visit_With = _visit_with
    visit_AsyncWith = _visit_with

    # ---------------------------------------------------------------- inference

    def infer(self, node: ast.expr) -> Any:
        """What an expression evaluates to, as far as the SDK's types tell."""
        if isinstance(node, ast.Await):
            return self.infer(node.value)
        if isinstance(node, ast.Name):
            value = self.names.get(node.id, _UNKNOWN)
            if inspect.isclass(value):
                return _Class(value)
            return value
        if isinstance(node, ast.Attribute):
            base = self.infer(node.value)
            return self._attribute(base, node.attr)
        if isinstance(node, ast.Call):
            return self._call_result(node)
        return _UNKNOWN

    def _attribute(self, base: Any, attr: str) -> Any:
        if inspect.ismodule(base):
            value = getattr(base, attr, _UNKNOWN)
            return _Class(value) if inspect.isclass(value) else value
        if isinstance(base, _Class):
            raw = _raw_attr(base.cls, attr)
            if raw is None:
                return _UNKNOWN
            if _is_class_method_variant(raw):
                return _Callable(
                    getattr(base.cls, raw.class_method_name), False, f"{base.cls.__name__}.{attr}", base.cls
                )
            if isinstance(raw, classmethod | staticmethod):
                return _Callable(getattr(base.cls, attr), False, f"{base.cls.__name__}.{attr}", base.cls)
            if inspect.isfunction(raw):
                return _Callable(raw, True, f"{base.cls.__name__}.{attr}", base.cls)
            return _UNKNOWN
        if isinstance(base, _Instance):
            raw = _raw_attr(base.cls, attr)
            if raw is None:
                return _UNKNOWN
            if isinstance(raw, property):
                try:
                    hints = typing.get_type_hints(raw.fget)
                except Exception:
                    return _UNKNOWN
                return _resolve_annotation(raw.fget, hints.get("return", inspect.Signature.empty), base.cls)
            if _is_class_method_variant(raw):
                return _Callable(raw.method, True, f"{base.cls.__name__}().{attr}", base.cls)
            if isinstance(raw, classmethod):
                return _Callable(getattr(base.cls, attr), False, f"{base.cls.__name__}().{attr}", base.cls)
            if isinstance(raw, staticmethod):
                return _Callable(raw.__func__, False, f"{base.cls.__name__}().{attr}", base.cls)
            if inspect.isfunction(raw):
                return _Callable(raw, True, f"{base.cls.__name__}().{attr}", base.cls)
        return _UNKNOWN

    def _target(self, node: ast.Call) -> Any:
        func = self.infer(node.func)
        if isinstance(func, _Class):
            return func
        if isinstance(func, _Callable):
            return func
        if inspect.isfunction(func):
            return _Callable(func, False, func.__name__)
        return _UNKNOWN

    def _call_result(self, node: ast.Call) -> Any:
        target = self._target(node)
        if isinstance(target, _Class):
            return _Instance(target.cls)
        if isinstance(target, _Callable):
            try:
                annotation = inspect.signature(target.func).return_annotation
            except (TypeError, ValueError):
                return _UNKNOWN
            return _resolve_annotation(target.func, annotation, target.owner)
        return _UNKNOWN

    # ---------------------------------------------------------------- checking calls

    def _missing_method(self, node: ast.Call) -> str | None:
        """The name of a called attribute that an SDK class does not have at all."""
        if not isinstance(node.func, ast.Attribute):
            return None
        base = self.infer(node.func.value)
        cls = base.cls if isinstance(base, _Instance | _Class) else None
        if cls is None or cls.__module__.split(".")[0] not in SDK_MODULES:
            return None
        attr = node.func.attr
        if hasattr(cls, attr) or attr in getattr(cls, "__annotations__", {}):
            return None
        return f"{cls.__name__}.{attr}"

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        missing = self._missing_method(node)
        if missing:
            self.report.problems.append(f"line {node.lineno}: {missing} does not exist in the installed SDK")
            return
        target = self._target(node)
        if target is _UNKNOWN:
            return
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            return
        if isinstance(target, _Class):
            cls = target.cls
            label = cls.__name__
            if any(k.__name__ == "SandboxBase" for k in cls.__mro__):
                self.report.problems.append(
                    f"line {node.lineno}: {label}(...) constructs a sandbox directly; use {label}.create(...)"
                )
                return
            try:
                signature = inspect.signature(cls)
            except (TypeError, ValueError):
                return
            func_for_unpack: Any = cls.__init__
            args: list[Any] = [object()] * len(node.args)
        else:
            label = target.label
            try:
                signature = inspect.signature(target.func)
            except (TypeError, ValueError):
                return
            func_for_unpack = target.func
            args = [object()] * (len(node.args) + (1 if target.needs_self else 0))
        kwargs = {k.arg: object() for k in node.keywords if k.arg}
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            self.report.problems.append(f"line {node.lineno}: {label}(...) does not match the SDK: {exc}")
            return
        for name, param in signature.parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD and name in bound.arguments:
                allowed = _typed_dict_keys(param.annotation, func_for_unpack)
                extra = set(bound.arguments[name])
                if allowed is not None and extra - allowed:
                    self.report.problems.append(
                        f"line {node.lineno}: {label}(...) has unknown options {sorted(extra - allowed)}"
                    )
                    return
        self._extra_checks(node, label)
        self.report.bound.append(f"line {node.lineno}: {label}")

    def _extra_checks(self, node: ast.Call, label: str) -> None:
        for keyword in node.keywords:
            if keyword.arg == "mcp" and isinstance(keyword.value, ast.Dict):
                for problem in check_mcp_literal(keyword.value):
                    self.report.problems.append(f"line {node.lineno}: {problem}")
            if keyword.arg == "query" and label.endswith(".list") and isinstance(keyword.value, ast.Dict):
                self.report.problems.append(
                    f"line {node.lineno}: {label}(query={{...}}) needs SandboxQuery(...) in Python, not a dict"
                )


def check_code(code: str) -> Report:
    """Check every SDK call of `code` it can resolve; return what bound and what did not."""
    checker = _Checker()
    checker.visit(ast.parse(code))
    return checker.report
