"""Static checks of Bicep files that pycep-parser and checkov do not make (no Bicep CLI can run here).

* A parser for the Bicep syntax our files use (declarations, decorators, objects, arrays, interpolated and
  multi-line strings, member/index access, calls, operators, ``if``/``for`` bodies, lambdas as function
  arguments: ``filter(xs, x => ...)``, ``reduce(xs, 0, (sum, x) => ...)``); pycep's tree cannot be
  used because it turns identifiers and string literals into the same plain strings.
* A reference graph over params, variables, resources, modules and outputs (symbolic names, ``.outputs.``,
  ``.identity.``, ``.properties.``, ``parent``, ``dependsOn``, module params): an unknown name or a cycle is an
  error, as the compiler's BCP057/BCP080 are. A lambda's and a loop's variables are local names, not
  references; any other name in their bodies must be declared.
* Every resource body type-checked against the resource type definitions the Bicep compiler loads
  (``shared/bicep-types``, the ``generated/`` folder of Azure/bicep-types-az): unknown resource type or API
  version, unknown property, wrong literal type or value, missing required property, write to a read-only
  property, and a runtime value (``.properties``, ``.identity``, ``.outputs``, ``reference()``) where the type
  demands a value known at the start of the deployment (resource names: the compiler's BCP120).
* Property reads (``storage.properties.primaryEndpoints.blob``) checked against the resource's type: a
  property that does not exist, or a write-only one (BCP077), is an error.
* Module calls checked against the module's params (unknown or missing), module outputs read from a module
  checked against its outputs, declared output/param types against their values, and ``.bicepparam``
  files against their ``using`` template.

Used by tests/test_infra.py; ``python -m tests.bicep_check FILE...`` prints the problems.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUIRED, READ_ONLY, WRITE_ONLY, DEPLOY_TIME_CONSTANT = 1, 2, 4, 8
# Keys Bicep itself adds to every resource body (not part of the provider's type).
BICEP_RESOURCE_KEYS = {"parent", "scope", "dependson"}
# Resource properties whose values the compiler knows at the start of a deployment.
CONSTANT_RESOURCE_PROPERTIES = {"id", "name", "type", "apiversion"}
STRING_FUNCTIONS = {"readenvironmentvariable", "string", "tolower", "toupper", "uniquestring", "guid", "format",
                    "replace", "substring", "trim", "base64", "concat", "subscriptionresourceid", "resourceid", "tenantresourceid",
                    "extensionresourceid", "padleft", "datetimeadd", "utcnow", "newguid"}
INT_FUNCTIONS = {"int", "length", "indexof", "lastindexof"}
BOOL_FUNCTIONS = {"bool", "empty", "contains", "startswith", "endswith"}
RUNTIME_FUNCTIONS = {"reference", "listkeys", "listsecrets", "list", "listaccountsas", "listservicesas"}


class BicepSyntaxError(Exception):
    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}: {self.message}"


# --- syntax tree -----------------------------------------------------------------------------------
@dataclass
class Node:
    line: int


@dataclass
class Lit(Node):
    value: str | int | bool | None


@dataclass
class Interp(Node):
    parts: list[Node]


@dataclass
class Ref(Node):
    name: str


@dataclass
class Member(Node):
    target: Node
    name: str


@dataclass
class Index(Node):
    target: Node
    index: Node


@dataclass
class Call(Node):
    name: str
    args: list[Node]


@dataclass
class Obj(Node):
    items: list[tuple[str, Node, int]]

    def get(self, key: str) -> Node | None:
        for name, value, _ in self.items:
            if name.lower() == key.lower():
                return value
        return None


@dataclass
class Arr(Node):
    items: list[Node]


@dataclass
class Op(Node):
    op: str
    operands: list[Node]


@dataclass
class ForExpr(Node):
    names: tuple[str, ...]
    iterable: Node
    body: Node


@dataclass
class Lambda(Node):
    names: tuple[str, ...]
    body: Node


@dataclass
class IfExpr(Node):
    condition: Node
    body: Node


@dataclass
class Decl:
    kind: str  # param | var | resource | module | output | targetScope | using
    name: str
    line: int
    value: Node | None = None
    type_name: str = ""  # param/output type, resource 'Type@version', module path
    existing: bool = False
    decorators: list[Call] = field(default_factory=list)


@dataclass
class BicepFile:
    path: Path
    decls: list[Decl]

    def symbols(self) -> dict[str, Decl]:
        """What expressions can name (outputs have a namespace of their own: ``output location string = location``)."""
        return {d.name: d for d in self.decls if d.kind in {"param", "var", "resource", "module"}}


# --- parser -----------------------------------------------------------------------------------------
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"\d+")
_OPERATORS = ("??", "==", "!=", "=~", "!~", "<=", ">=", "&&", "||", "<", ">", "+", "-", "*", "/", "%")
_PRECEDENCE = {"??": 1, "||": 2, "&&": 3, "==": 4, "!=": 4, "=~": 4, "!~": 4, "<": 5, ">": 5, "<=": 5, ">=": 5,
               "+": 6, "-": 6, "*": 7, "/": 7, "%": 7}


class Parser:
    def __init__(self, text: str, path: Path) -> None:
        self.text = text
        self.path = path
        self.pos = 0

    # low level
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def fail(self, message: str) -> BicepSyntaxError:
        return BicepSyntaxError(self.path, self.line(), message)

    def skip(self) -> bool:
        """Skip blanks and comments; True when a newline was crossed."""
        newline = False
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in " \t\r":
                self.pos += 1
            elif ch == "\n":
                newline = True
                self.pos += 1
            elif self.text.startswith("//", self.pos):
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            elif self.text.startswith("/*", self.pos):
                end = self.text.find("*/", self.pos)
                if end < 0:
                    raise self.fail("unterminated comment")
                newline = newline or "\n" in self.text[self.pos:end]
                self.pos = end + 2
            else:
                break
        return newline

    def peek(self, token: str) -> bool:
        self.skip()
        return self.text.startswith(token, self.pos)

    def accept(self, token: str) -> bool:
        if self.peek(token):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.accept(token):
            found = self.text[self.pos:self.pos + 20].split("\n")[0]
            raise self.fail(f"expected {token!r}, found {found!r}")

    def ident(self) -> str:
        self.skip()
        match = _IDENT.match(self.text, self.pos)
        if not match:
            raise self.fail(f"expected a name, found {self.text[self.pos:self.pos + 20]!r}")
        self.pos = match.end()
        return match.group()

    def peek_ident(self) -> str | None:
        self.skip()
        match = _IDENT.match(self.text, self.pos)
        return match.group() if match else None

    # strings
    def string(self) -> Node:
        line = self.line()
        if self.text.startswith("'''", self.pos):
            end = self.text.find("'''", self.pos + 3)
            if end < 0:
                raise self.fail("unterminated multi-line string")
            value = self.text[self.pos + 3:end]
            self.pos = end + 3
            return Lit(line, value.removeprefix("\n") if value.startswith("\n") else value)
        self.pos += 1
        parts: list[Node] = []
        buf: list[str] = []
        escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", "$": "$"}
        while True:
            if self.pos >= len(self.text) or self.text[self.pos] == "\n":
                raise self.fail("unterminated string")
            ch = self.text[self.pos]
            if ch == "'":
                self.pos += 1
                break
            if ch == "\\":
                nxt = self.text[self.pos + 1:self.pos + 2]
                if nxt not in escapes:
                    raise self.fail(f"unknown escape \\{nxt}")
                buf.append(escapes[nxt])
                self.pos += 2
            elif self.text.startswith("${", self.pos):
                if buf:
                    parts.append(Lit(line, "".join(buf)))
                    buf = []
                self.pos += 2
                parts.append(self.expression())
                self.expect("}")
            else:
                buf.append(ch)
                self.pos += 1
        if not parts:
            return Lit(line, "".join(buf))
        if buf:
            parts.append(Lit(line, "".join(buf)))
        return Interp(line, parts)

    # expressions
    def expression(self) -> Node:
        cond = self.binary(1)
        if self.accept("?"):
            then = self.expression()
            self.expect(":")
            other = self.expression()
            return Op(cond.line, "?:", [cond, then, other])
        return cond

    def binary(self, min_precedence: int) -> Node:
        left = self.unary()
        while True:
            self.skip()
            op = next((o for o in _OPERATORS if self.text.startswith(o, self.pos)), None)
            if op is None or _PRECEDENCE[op] < min_precedence:
                return left
            self.pos += len(op)
            right = self.binary(_PRECEDENCE[op] + 1)
            left = Op(left.line, op, [left, right])

    def unary(self) -> Node:
        self.skip()
        for op in ("!", "-"):
            if self.text.startswith(op, self.pos) and not self.text.startswith("!=", self.pos):
                line = self.line()
                self.pos += 1
                return Op(line, op, [self.unary()])
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            save = self.pos
            newline = self.skip()
            if self.text.startswith(".?", self.pos) or (self.text.startswith(".", self.pos)
                                                        and not self.text.startswith("..", self.pos)):
                self.pos += 2 if self.text.startswith(".?", self.pos) else 1
                name = self.ident()
                if self.text.startswith("(", self.pos) and isinstance(node, Ref):
                    self.pos += 1
                    node = Call(node.line, f"{node.name}.{name}", self.arguments())
                else:
                    node = Member(node.line, node, name)
            elif not newline and self.text.startswith("[", self.pos):
                self.pos += 1
                self.accept("?")
                index = self.expression()
                self.expect("]")
                node = Index(node.line, node, index)
            elif self.text.startswith("!", self.pos) and not self.text.startswith("!=", self.pos) and not newline:
                self.pos += 1  # non-null assertion
            else:
                self.pos = save
                return node

    def arguments(self) -> list[Node]:
        """Call arguments; Bicep allows a lambda only here (``map``, ``filter``, ``reduce``, ``sort``...)."""
        args: list[Node] = []
        while not self.accept(")"):
            args.append(self.lambda_expression() or self.expression())
            self.accept(",")
        return args

    def lambda_expression(self) -> Lambda | None:
        """``x => body`` or ``(x, i) => body``; None (and nothing consumed) when no lambda starts here."""
        start = self.pos
        self.skip()
        line = self.line()
        names: list[str] = []
        if self.accept("("):
            while self.peek_ident() is not None:
                names.append(self.ident())
                if not self.accept(","):
                    break
            if not self.accept(")"):
                self.pos = start
                return None
        elif self.peek_ident() is not None:
            names.append(self.ident())
        if not names or not self.accept("=>"):
            self.pos = start
            return None
        return Lambda(line, tuple(names), self.expression())

    def primary(self) -> Node:
        self.skip()
        line = self.line()
        ch = self.text[self.pos:self.pos + 1]
        if ch == "'":
            return self.string()
        if ch == "{":
            return self.obj()
        if ch == "[":
            return self.array()
        if ch == "(":
            self.pos += 1
            inner = self.expression()
            self.expect(")")
            return inner
        number = _NUMBER.match(self.text, self.pos)
        if number:
            self.pos = number.end()
            return Lit(line, int(number.group()))
        name = self.ident()
        if name in {"true", "false"}:
            return Lit(line, name == "true")
        if name == "null":
            return Lit(line, None)
        if self.text.startswith("(", self.pos):
            self.pos += 1
            return Call(line, name, self.arguments())
        return Ref(line, name)

    def obj(self) -> Obj:
        line = self.line()
        self.expect("{")
        items: list[tuple[str, Node, int]] = []
        while not self.accept("}"):
            self.skip()
            key_line = self.line()
            if self.text.startswith("'", self.pos):
                key_node = self.string()
                if not isinstance(key_node, Lit) or not isinstance(key_node.value, str):
                    raise self.fail("computed object keys are not supported by this checker")
                key = key_node.value
            else:
                key = self.ident()
            self.expect(":")
            items.append((key, self.expression(), key_line))
            self.accept(",")
        return Obj(line, items)

    def array(self) -> Node:
        line = self.line()
        self.expect("[")
        if self.peek_ident() == "for":
            self.ident()
            if self.accept("("):
                names = [self.ident()]
                while self.accept(","):
                    names.append(self.ident())
                self.expect(")")
            else:
                names = [self.ident()]
            if self.ident() != "in":
                raise self.fail("expected 'in' in a for expression")
            iterable = self.expression()
            self.expect(":")
            body = self.body()
            self.expect("]")
            return ForExpr(line, tuple(names), iterable, body)
        items: list[Node] = []
        while not self.accept("]"):
            items.append(self.expression())
            self.accept(",")
        return Arr(line, items)

    def body(self) -> Node:
        """A resource/module body: an object, ``if (cond) {...}`` or a for expression."""
        if self.peek_ident() == "if":
            line = self.line()
            self.ident()
            self.expect("(")
            condition = self.expression()
            self.expect(")")
            return IfExpr(line, condition, self.obj())
        if self.peek("["):
            return self.array()
        return self.obj()

    # declarations
    def type_expression(self) -> str:
        start = self.pos
        self.skip()
        if self.peek("'"):
            self.string()
        elif self.peek("{") or self.peek("["):
            raise self.fail("inline type expressions are not supported by this checker")
        else:
            self.ident()
            while self.accept("."):
                self.ident()
        if self.accept("[]"):
            pass
        self.accept("?")
        return self.text[start:self.pos].strip()

    def parse(self) -> BicepFile:
        decls: list[Decl] = []
        decorators: list[Call] = []
        while True:
            self.skip()
            if self.pos >= len(self.text):
                break
            line = self.line()
            if self.accept("@"):
                expr = self.postfix(self.primary())
                if not isinstance(expr, Call):
                    raise self.fail("a decorator must be a call")
                decorators.append(expr)
                continue
            keyword = self.ident()
            if keyword == "targetScope":
                self.expect("=")
                decls.append(Decl("targetScope", "targetScope", line, self.expression()))
            elif keyword == "using":
                self.skip()
                decls.append(Decl("using", "using", line, self.string()))
            elif keyword == "param":
                name = self.ident()
                if self.accept("="):  # .bicepparam assignment
                    decls.append(Decl("param", name, line, self.expression(), decorators=decorators))
                else:
                    type_name = self.type_expression()
                    value = self.expression() if self.accept("=") else None
                    decls.append(Decl("param", name, line, value, type_name, decorators=decorators))
            elif keyword == "var":
                name = self.ident()
                self.expect("=")
                decls.append(Decl("var", name, line, self.expression(), decorators=decorators))
            elif keyword == "output":
                name = self.ident()
                type_name = self.type_expression()
                self.expect("=")
                decls.append(Decl("output", name, line, self.expression(), type_name, decorators=decorators))
            elif keyword in {"resource", "module"}:
                name = self.ident()
                self.skip()
                type_node = self.string()
                if not isinstance(type_node, Lit) or not isinstance(type_node.value, str):
                    raise self.fail(f"{keyword} {name}: the type must be a plain string")
                existing = self.peek_ident() == "existing"
                if existing:
                    self.ident()
                self.expect("=")
                decls.append(Decl(keyword, name, line, self.body(), type_node.value, existing, decorators))
            else:
                raise self.fail(f"unsupported statement {keyword!r}")
            decorators = []
        return BicepFile(self.path, decls)


def parse_file(path: Path) -> BicepFile:
    return Parser(path.read_text(encoding="utf-8"), path).parse()


# --- walking expressions ---------------------------------------------------------------------------------
def children(node: Node) -> Iterator[Node]:
    if isinstance(node, Interp):
        yield from node.parts
    elif isinstance(node, Member):
        yield node.target
    elif isinstance(node, Index):
        yield node.target
        yield node.index
    elif isinstance(node, Call):
        yield from node.args
    elif isinstance(node, Obj):
        yield from (value for _, value, _ in node.items)
    elif isinstance(node, Arr):
        yield from node.items
    elif isinstance(node, Op):
        yield from node.operands
    elif isinstance(node, ForExpr):
        yield node.iterable
        yield node.body
    elif isinstance(node, IfExpr):
        yield node.condition
        yield node.body
    elif isinstance(node, Lambda):
        yield node.body


def free_refs(node: Node, bound: frozenset[str] = frozenset()) -> Iterator[Ref]:
    """Every name the expression reads that is not a loop or lambda variable."""
    if isinstance(node, Ref):
        if node.name not in bound:
            yield node
        return
    if isinstance(node, ForExpr):
        yield from free_refs(node.iterable, bound)
        yield from free_refs(node.body, bound | set(node.names))
        return
    if isinstance(node, Lambda):
        yield from free_refs(node.body, bound | set(node.names))
        return
    for child in children(node):
        yield from free_refs(child, bound)


def member_chain(node: Node) -> tuple[str, list[str]] | None:
    """``a.b.c`` (indexes skipped) as ('a', ['b', 'c'])."""
    names: list[str] = []
    while isinstance(node, Member | Index):
        if isinstance(node, Member):
            names.append(node.name)
        node = node.target
    if isinstance(node, Ref):
        return node.name, list(reversed(names))
    return None


def access_path(node: Node) -> tuple[str | None, list[str]]:
    """``a.b[0].c`` as ('a', ['b', '[]', 'c']); (None, ...) when it does not start at a name."""
    steps: list[str] = []
    while isinstance(node, Member | Index):
        steps.append(node.name if isinstance(node, Member) else "[]")
        node = node.target
    return (node.name if isinstance(node, Ref) else None), list(reversed(steps))


# --- resource types -------------------------------------------------------------------------------------
class TypeLibrary:
    """The compiler's resource type definitions: ``types.json`` files, each one JSON array of types."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise FileNotFoundError(f"Bicep type definitions not found at {root}")
        self.index: dict[str, tuple[list[dict[str, Any]], int]] = {}
        for path in sorted(root.rglob("types.json")):
            types = json.loads(path.read_text(encoding="utf-8"))
            for entry in types:
                if entry.get("$type") == "ResourceType":
                    self.index[entry["name"].lower()] = (types, _ref(entry["body"]))

    def body(self, type_and_version: str) -> tuple[list[dict[str, Any]], int] | None:
        return self.index.get(type_and_version.lower())


def _ref(value: dict[str, str]) -> int:
    return int(value["$ref"].removeprefix("#/"))


def _describe(types: list[dict[str, Any]], index: int, depth: int = 0) -> str:
    entry = types[index]
    kind = entry["$type"]
    if kind == "StringLiteralType":
        return repr(entry["value"])
    if kind == "UnionType" and depth < 1:
        return " | ".join(_describe(types, _ref(e), depth + 1) for e in entry["elements"])
    if kind in {"ObjectType", "DiscriminatedObjectType"}:
        return f"object {entry.get('name', '')}".strip()
    return kind.removesuffix("Type").lower()


# --- the checker ------------------------------------------------------------------------------------------
class Checker:
    def __init__(self, library: TypeLibrary) -> None:
        self.library = library
        self.problems: list[Problem] = []
        self.parsed: dict[Path, BicepFile] = {}

    def load(self, path: Path) -> BicepFile | None:
        path = path.resolve()
        if path not in self.parsed:
            try:
                self.parsed[path] = parse_file(path)
            except BicepSyntaxError as exc:
                self.problems.append(Problem(path, 0, str(exc)))
                return None
            except OSError as exc:
                self.problems.append(Problem(path, 0, f"cannot read: {exc.strerror}"))
                return None
        return self.parsed[path]

    def report(self, path: Path, line: int, message: str) -> None:
        self.problems.append(Problem(path, line, message))

    def check(self, path: Path) -> list[Problem]:
        bicep = self.load(path)
        if bicep is None:
            return self.problems
        if path.suffix == ".bicepparam":
            self.check_params_file(bicep)
        else:
            self.check_references(bicep)
            self.check_property_reads(bicep)
            for decl in bicep.decls:
                if decl.kind == "resource":
                    self.check_resource(bicep, decl)
                elif decl.kind == "module":
                    self.check_module(bicep, decl)
                elif decl.kind in {"output", "param"} and decl.value is not None:
                    found = self.infer(bicep, decl.value)
                    if found and decl.type_name in {"string", "int", "bool", "object", "array"} \
                            and found != decl.type_name:
                        self.report(bicep.path, decl.line, f"{decl.kind} {decl.name}: declared {decl.type_name}, "
                                    f"but the value is {found}")
        return self.problems

    # references and cycles
    def check_references(self, bicep: BicepFile) -> None:
        symbols = bicep.symbols()
        graph: dict[str, list[str]] = {}
        for decl in bicep.decls:
            if decl.kind not in {"param", "var", "resource", "module", "output"} or decl.value is None:
                continue
            edges: list[str] = []
            for ref in free_refs(decl.value):
                if ref.name in {"az", "sys"}:
                    continue
                if ref.name not in symbols:
                    self.report(bicep.path, ref.line, f"{decl.kind} {decl.name}: unknown name {ref.name!r}")
                else:
                    edges.append(ref.name)
            if decl.kind != "output":  # nothing can reference an output, so it closes no cycle
                graph[decl.name] = edges
        self._cycles(bicep, graph)

    def check_property_reads(self, bicep: BicepFile) -> None:
        """``res.properties.x.y`` must exist in the resource's type and must not be write-only (BCP077)."""
        symbols = bicep.symbols()
        for decl in bicep.decls:
            if decl.value is None:
                continue
            for node in _walk(decl.value):
                if not isinstance(node, Member):
                    continue
                root, steps = access_path(node)
                target = symbols.get(root) if root else None
                if target is None or target.kind != "resource":
                    continue
                found = self.library.body(target.type_name)
                if found is None:
                    continue  # reported on the resource itself
                if isinstance(target.value, ForExpr) and steps[:1] == ["[]"]:
                    steps = steps[1:]  # the index into a resource collection
                problem = self._read_problem(*found, steps)
                if problem:
                    self.report(bicep.path, node.line, f"{decl.kind} {decl.name}: {root}.{problem}")

    @staticmethod
    def _read_problem(types: list[dict[str, Any]], index: int, steps: list[str]) -> str:
        walked: list[str] = []
        for step in steps:
            entry = types[index]
            kind = entry["$type"]
            if step == "[]":
                if kind != "ArrayType":
                    return ""  # an index into something not typed as an array (any, union): not judged
                index = _ref(entry["itemType"])
                continue
            walked.append(step)
            if kind == "ObjectType":
                properties = entry.get("properties", {})
                if entry.get("additionalProperties") and step not in properties:
                    return ""
            elif kind == "DiscriminatedObjectType":
                properties = dict(entry.get("baseProperties", {}))
                for element in entry["elements"].values():
                    properties.update(types[_ref(element)].get("properties", {}))
            else:
                return ""  # any, union: the compiler does not narrow either
            spec = next((v for k, v in properties.items() if k.lower() == step.lower()), None)
            if spec is None:
                return f"{'.'.join(walked)}: no such property in {entry.get('name', 'the type')}"
            if spec.get("flags", 0) & WRITE_ONLY:
                return f"{'.'.join(walked)}: the property is write-only and cannot be read"
            index = _ref(spec["type"])
        return ""

    def _cycles(self, bicep: BicepFile, graph: dict[str, list[str]]) -> None:
        state: dict[str, int] = {}  # 1 visiting, 2 done
        stack: list[str] = []
        lines = {d.name: d.line for d in bicep.decls}

        def visit(name: str) -> None:
            state[name] = 1
            stack.append(name)
            for nxt in graph.get(name, []):
                if state.get(nxt) == 1:
                    cycle = [*stack[stack.index(nxt):], nxt]
                    self.report(bicep.path, lines[nxt], "reference cycle: " + " -> ".join(cycle))
                elif nxt not in state:
                    visit(nxt)
            stack.pop()
            state[name] = 2

        for name in graph:
            if name not in state:
                visit(name)

    # modules
    def check_module(self, bicep: BicepFile, decl: Decl) -> None:
        module = self.load(bicep.path.parent / decl.type_name)
        body = self._body(decl.value)
        if module is None or not isinstance(body, Obj):
            return
        declared = {d.name: d for d in module.decls if d.kind == "param"}
        given = body.get("params")
        given_names: dict[str, tuple[Node, int]] = {}
        if isinstance(given, Obj):
            given_names = {name: (value, line) for name, value, line in given.items}
        for name, (value, line) in given_names.items():
            if name not in declared:
                self.report(bicep.path, line, f"module {decl.name}: {decl.type_name} has no param {name!r}")
                continue
            expected = declared[name].type_name
            found = self.infer(bicep, value)
            if found and expected in {"string", "int", "bool", "object", "array"} and found != expected:
                self.report(bicep.path, line, f"module {decl.name}: param {name} expects {expected}, got {found}")
        for name, param in declared.items():
            if param.value is None and name not in given_names:
                self.report(bicep.path, decl.line, f"module {decl.name}: required param {name!r} not given")
        outputs = {d.name for d in module.decls if d.kind == "output"}
        for other in bicep.decls:
            if other.value is None:
                continue
            for node in _walk(other.value):
                chain = member_chain(node)
                if chain and chain[0] == decl.name and chain[1][:1] == ["outputs"] and len(chain[1]) > 1 \
                        and chain[1][1] not in outputs:
                    self.report(bicep.path, node.line, f"module {decl.name} has no output {chain[1][1]!r}")

    def check_params_file(self, bicep: BicepFile) -> None:
        using = next((d for d in bicep.decls if d.kind == "using"), None)
        if using is None or not isinstance(using.value, Lit) or not isinstance(using.value.value, str):
            self.report(bicep.path, 1, "a .bicepparam file needs a using declaration")
            return
        template = self.load(bicep.path.parent / using.value.value)
        if template is None:
            return
        declared = {d.name: d for d in template.decls if d.kind == "param"}
        given = {d.name: d for d in bicep.decls if d.kind == "param"}
        for name, decl in given.items():
            if name not in declared:
                self.report(bicep.path, decl.line, f"param {name!r} is not a param of {using.value.value}")
            elif decl.value is not None:
                found = self.infer(bicep, decl.value)
                expected = declared[name].type_name
                if found and expected in {"string", "int", "bool"} and found != expected:
                    self.report(bicep.path, decl.line, f"param {name} expects {expected}, got {found}")
        for name, decl in declared.items():
            secure = any(c.name.split(".")[-1] == "secure" for c in decl.decorators)
            if decl.value is None and name not in given and not secure:
                self.report(bicep.path, 1, f"required param {name!r} of {using.value.value} is not set")

    # resources
    @staticmethod
    def _body(node: Node | None) -> Node | None:
        while isinstance(node, IfExpr | ForExpr):
            node = node.body
        return node

    def check_resource(self, bicep: BicepFile, decl: Decl) -> None:
        found = self.library.body(decl.type_name)
        if found is None:
            self.report(bicep.path, decl.line, f"resource {decl.name}: unknown resource type or API version "
                        f"{decl.type_name!r}")
            return
        types, body_type = found
        body = self._body(decl.value)
        if not isinstance(body, Obj):
            return
        if decl.existing:
            for key, _, line in body.items:
                if key.lower() not in {"name", "scope", "parent"}:
                    self.report(bicep.path, line, f"resource {decl.name}: an existing resource takes only name, "
                                f"scope and parent, not {key!r}")
            return
        self.check_value(bicep, f"resource {decl.name}", body, types, body_type, top=True)

    def check_value(self, bicep: BicepFile, where: str, node: Node, types: list[dict[str, Any]], index: int,
                    *, top: bool = False) -> None:
        for problem in self.value_problems(bicep, where, node, types, index, top=top):
            self.report(bicep.path, problem[0], problem[1])

    def value_problems(self, bicep: BicepFile, where: str, node: Node, types: list[dict[str, Any]], index: int,
                       *, top: bool = False, seen: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
        entry = types[index]
        kind = entry["$type"]
        if isinstance(node, IfExpr | ForExpr) and kind != "ArrayType":
            return self.value_problems(bicep, where, node.body, types, index)
        if isinstance(node, Op) and node.op == "?:":  # each branch must fit
            return [p for branch in node.operands[1:] for p in self.value_problems(bicep, where, branch, types, index)]
        if isinstance(node, Ref) and node.name not in seen:  # a variable is checked by its value, as the compiler does
            decl = bicep.symbols().get(node.name)
            if decl is not None and decl.kind == "var" and decl.value is not None:
                return self.value_problems(bicep, where, decl.value, types, index, seen=seen | {node.name})
        if kind == "AnyType":
            return []
        if kind == "UnionType":
            attempts = [self.value_problems(bicep, where, node, types, _ref(e)) for e in entry["elements"]]
            if any(not a for a in attempts):
                return []
            if isinstance(node, Obj):  # the object branch's own problems say more than "expects a | b"
                object_attempts = [a for e, a in zip(entry["elements"], attempts, strict=True)
                                   if types[_ref(e)]["$type"] in {"ObjectType", "DiscriminatedObjectType"}]
                if object_attempts:
                    return min(object_attempts, key=len)
            return [(node.line, f"{where}: expects {_describe(types, index)}, got {self.show(bicep, node)}")]
        found = self.infer(bicep, node)
        if kind == "StringLiteralType":
            if isinstance(node, Lit) and node.value != entry["value"]:
                return [(node.line, f"{where}: expects {entry['value']!r}, got {self.show(bicep, node)}")]
            if found and found != "string":
                return [(node.line, f"{where}: expects {entry['value']!r}, got {found}")]
            return []
        if kind in {"StringType", "IntegerType", "BooleanType"}:
            expected = {"StringType": "string", "IntegerType": "int", "BooleanType": "bool"}[kind]
            if found and found != expected:
                return [(node.line, f"{where}: expects {expected}, got {self.show(bicep, node)}")]
            return self._limits(where, node, entry)
        if kind == "ArrayType":
            if found and found != "array":
                return [(node.line, f"{where}: expects an array, got {found}")]
            if isinstance(node, ForExpr):
                return self.value_problems(bicep, f"{where}[]", node.body, types, _ref(entry["itemType"]))
            if isinstance(node, Arr):
                out: list[tuple[int, str]] = []
                for item in node.items:
                    out += self.value_problems(bicep, f"{where}[]", item, types, _ref(entry["itemType"]))
                return out
            return []
        if kind in {"ObjectType", "DiscriminatedObjectType"}:
            if found and found != "object":
                return [(node.line, f"{where}: expects an object, got {found}")]
            if not isinstance(node, Obj):
                return []
            return self._object(bicep, where, node, types, entry, top=top)
        return [(node.line, f"{where}: type kind {kind} is not known to this checker")]

    @staticmethod
    def _limits(where: str, node: Node, entry: dict[str, Any]) -> list[tuple[int, str]]:
        if not isinstance(node, Lit):
            return []
        value = node.value
        if isinstance(value, str):
            if "minLength" in entry and len(value) < entry["minLength"]:
                return [(node.line, f"{where}: {value!r} is shorter than {entry['minLength']}")]
            if "maxLength" in entry and len(value) > entry["maxLength"]:
                return [(node.line, f"{where}: {value!r} is longer than {entry['maxLength']}")]
        if isinstance(value, int) and not isinstance(value, bool):
            if "minValue" in entry and value < entry["minValue"]:
                return [(node.line, f"{where}: {value} is below {entry['minValue']}")]
            if "maxValue" in entry and value > entry["maxValue"]:
                return [(node.line, f"{where}: {value} is above {entry['maxValue']}")]
        return []

    def _object(self, bicep: BicepFile, where: str, node: Obj, types: list[dict[str, Any]], entry: dict[str, Any],
                *, top: bool) -> list[tuple[int, str]]:
        properties: dict[str, dict[str, Any]]
        additional: dict[str, str] | None
        if entry["$type"] == "DiscriminatedObjectType":
            discriminator = entry["discriminator"]
            value = node.get(discriminator)
            properties = dict(entry.get("baseProperties", {}))
            additional = None
            if isinstance(value, Lit) and isinstance(value.value, str):
                element = entry["elements"].get(value.value)
                if element is None:
                    return [(value.line, f"{where}: {discriminator} {value.value!r} is not one of "
                             f"{sorted(entry['elements'])}")]
                chosen = types[_ref(element)]
                properties.update(chosen.get("properties", {}))
                additional = chosen.get("additionalProperties")
            else:
                return []  # a computed discriminator: the compiler cannot narrow it either
        else:
            properties = entry.get("properties", {})
            additional = entry.get("additionalProperties")
        by_lower = {name.lower(): (name, spec) for name, spec in properties.items()}
        out: list[tuple[int, str]] = []
        for key, value, line in node.items:
            if top and key.lower() in BICEP_RESOURCE_KEYS:
                continue
            known = by_lower.get(key.lower())
            if known is None:
                if additional is None:
                    out.append((line, f"{where}: unknown property {key!r}"))
                else:
                    out += self.value_problems(bicep, f"{where}.{key}", value, types, _ref(additional))
                continue
            name, spec = known
            flags = spec.get("flags", 0)
            if flags & READ_ONLY and not flags & REQUIRED:
                out.append((line, f"{where}: property {name!r} is read-only"))
                continue
            if flags & DEPLOY_TIME_CONSTANT:
                runtime = self.runtime_value(bicep, value)
                if runtime:
                    out.append((line, f"{where}: {name} must be known at the start of the deployment, "
                                f"but reads {runtime}"))
            out += self.value_problems(bicep, f"{where}.{name}", value, types, _ref(spec["type"]))
        present = {key.lower() for key, _, _ in node.items}
        for name, spec in properties.items():
            if spec.get("flags", 0) & REQUIRED and name.lower() not in present:
                out.append((node.line, f"{where}: required property {name!r} is missing"))
        return out

    # expression facts
    def infer(self, bicep: BicepFile, node: Node, seen: frozenset[str] = frozenset()) -> str | None:
        """The primitive type of an expression when it is certain: string, int, bool, object, array."""
        if isinstance(node, Lit):
            value = node.value
            if isinstance(value, bool):
                return "bool"
            if isinstance(value, int):
                return "int"
            return "string" if isinstance(value, str) else None
        if isinstance(node, Interp):
            return "string"
        if isinstance(node, Obj):
            return "object"
        if isinstance(node, Arr | ForExpr):
            return "array"
        if isinstance(node, Call):
            name = node.name.split(".")[-1].lower()
            if name in STRING_FUNCTIONS:
                return "string"
            if name in INT_FUNCTIONS:
                return "int"
            if name in BOOL_FUNCTIONS:
                return "bool"
            return None
        if isinstance(node, Op):
            if node.op == "?:":
                then, other = (self.infer(bicep, n, seen) for n in node.operands[1:])
                return then if then == other else None
            if node.op in {"==", "!=", "=~", "!~", "<", ">", "<=", ">=", "&&", "||", "!"}:
                return "bool"
            if node.op in {"*", "/", "%"} or (node.op == "-" and len(node.operands) == 1):
                return "int"
            return None
        if isinstance(node, Ref) and node.name not in seen:
            decl = bicep.symbols().get(node.name)
            if decl is None:
                return None
            if decl.kind == "param" and decl.type_name in {"string", "int", "bool", "object", "array"}:
                return decl.type_name
            if decl.kind == "var" and decl.value is not None:
                return self.infer(bicep, decl.value, seen | {node.name})
        return None

    def runtime_value(self, bicep: BicepFile, node: Node, seen: frozenset[str] = frozenset()) -> str:
        """What in the expression is only known while deploying ('' when everything is known at the start)."""
        symbols = bicep.symbols()
        for sub in _walk(node):
            if isinstance(sub, Call) and sub.name.split(".")[-1].lower() in RUNTIME_FUNCTIONS:
                return f"{sub.name}()"
            chain = member_chain(sub) if isinstance(sub, Member) else None
            if chain:
                decl = symbols.get(chain[0])
                if decl and decl.kind in {"resource", "module"} and chain[1] \
                        and chain[1][0].lower() not in CONSTANT_RESOURCE_PROPERTIES:
                    return f"{chain[0]}.{'.'.join(chain[1])}"
            if isinstance(sub, Ref) and sub.name not in seen:
                decl = symbols.get(sub.name)
                if decl and decl.kind == "var" and decl.value is not None:
                    found = self.runtime_value(bicep, decl.value, seen | {sub.name})
                    if found:
                        return f"{sub.name} = {found}"
        return ""

    def show(self, bicep: BicepFile, node: Node) -> str:
        if isinstance(node, Lit):
            return repr(node.value)
        return self.infer(bicep, node) or type(node).__name__.lower()


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for child in children(node):
        yield from _walk(child)


def check_files(paths: list[Path], types_root: Path) -> list[Problem]:
    checker = Checker(TypeLibrary(types_root))
    for path in paths:
        checker.check(path)
    unique: dict[str, Problem] = {str(p): p for p in checker.problems}
    return list(unique.values())


def default_types_root() -> Path:
    """``shared/bicep-types`` beside the repository (CI: a fresh clone with shared/ next to it)."""
    return Path(__file__).resolve().parents[2] / "shared" / "bicep-types"


def main(argv: list[str]) -> int:
    problems = check_files([Path(a) for a in argv], default_types_root())
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
