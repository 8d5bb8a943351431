"""Which outputs of a template depend on the recipient, so the rest is rendered once.

Many subscribers get the same papers (the same topics, the same top papers of the day):
their emails differ only where a template prints the recipient. ``split(env, name)``
reads the template's syntax tree and, when the recipient appears only in

    {{ expression }}              any expression of the recipient and of context names
                                  (not of names the template sets itself, like a loop's)
    {% if recipient_name %}       a recipient name tested for truth, or ``not`` it

returns the template with each such ``{{ expression }}`` replaced by a slot
(``__nl_slot(i)``) and each test by a flag, plus a small template that evaluates the
original expressions for a given recipient. ``once.RenderedOnce`` renders the template with
slots once per distinct digest and evaluates only the slots per recipient: the same output,
without running the template again. Anything else (the recipient in a ``{% set %}``, a
loop, a macro, an include) raises ``CannotSplit`` saying where, and the template is
rendered in full for every recipient.

    template  = split.template.render(context without the recipient, flags)   (once)
    values    = split.outputs evaluated in the recipient's whole context         (each)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.runtime import new_context

#: What differs between two recipients of the same papers (``digest`` holds the subscriber).
RECIPIENT = frozenset(
    {"recipient_name", "recipient_email", "unsubscribe_url", "manage_url", "topics", "digest"}
)

SLOT = "__nl_slot"
CAPTURE = "__nl_capture"
FLAG = "__nl_has_"

#: Statements a template may use to be split; any other (include, import, macro, call,
#: filter and autoescape blocks, extends) could reach the recipient another way.
_ALLOWED = (nodes.Output, nodes.If, nodes.For, nodes.Assign)


class CannotSplit(Exception):
    """Why a template is rendered in full for every recipient: ``reason``, naming the line.
    ``reason`` is None when the template does not compile (rendering reports that)."""

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason or "the template does not compile")
        self.reason = reason


#: How an operator wrote the statements a split refuses.
_STATEMENTS = {
    "Include": "{% include %}",
    "Import": "{% import %}",
    "FromImport": "{% from ... import %}",
    "Macro": "{% macro %}",
    "CallBlock": "{% call %}",
    "FilterBlock": "{% filter %}",
    "With": "{% with %}",
    "Block": "{% block %}",
    "Extends": "{% extends %}",
    "ScopedEvalContextModifier": "{% autoescape %}",
    "EvalContextModifier": "{% autoescape %}",
    "ExprStmt": "{% do %}",
}


@dataclass(frozen=True)
class Split:
    """A template rendered once per digest, and what to evaluate per recipient."""

    template: jinja2.Template  # the recipient's outputs are ``__nl_slot(i)`` calls
    outputs: jinja2.Template  # sets ``__nl_capture<i>`` to output i's expression
    count: int  # how many outputs
    tested: tuple[str, ...]  # recipient names tested for truth: ``__nl_has_<name>``
    reads: tuple[str, ...]  # the other context names the template reads: the memo key
    captures: tuple[str, ...] = ()  # what ``outputs`` sets, in output order


def split(env: jinja2.Environment, name: str) -> Split:
    """The template split at its recipient outputs; ``CannotSplit`` when it cannot be."""
    if env.loader is None:
        raise CannotSplit("no template loader")
    try:
        source, filename, _ = env.loader.get_source(env, name)
        tree = env.parse(source, name, filename)
    except jinja2.TemplateError:
        raise CannotSplit(None) from None  # rendering reports it, with file and line
    for node in tree.find_all(nodes.Stmt):
        if not isinstance(node, _ALLOWED):
            kind = type(node).__name__
            statement = _STATEMENTS.get(kind, f"a {kind} statement")
            raise CannotSplit(f"line {node.lineno}: {statement} (the recipient may be read in it)")
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    assigned.add("loop")
    for n in tree.find_all(nodes.Name):
        if n.ctx in ("store", "param") and n.name in RECIPIENT:
            raise CannotSplit(f"line {n.lineno}: sets {n.name}, a name for the recipient")
    outputs: list[nodes.Expr] = []
    for output in tree.find_all(nodes.Output):
        for i, child in enumerate(output.nodes):
            if isinstance(child, nodes.TemplateData):
                continue
            used = _loaded(child)
            if not used & RECIPIENT:
                continue
            if used & assigned:  # it needs the loop or a variable: not evaluable on its own
                raise CannotSplit(
                    f"line {child.lineno}: prints {_names(used & RECIPIENT)} with "
                    f"{_names(used & assigned)}, which the template sets"
                )
            output.nodes[i] = _call(SLOT, [nodes.Const(len(outputs))], child.lineno)
            outputs.append(child)
    tested: set[str] = set()
    for test in tree.find_all(nodes.If):
        found = _tested(test.test)
        if found is not None:
            tested.add(found)
            flag = nodes.Name(FLAG + found, "load", lineno=test.test.lineno)
            test.test = (
                nodes.Not(flag, lineno=flag.lineno) if isinstance(test.test, nodes.Not) else flag
            )
    for n in tree.find_all(nodes.Name):
        if n.name in RECIPIENT:  # in a loop, a condition, a filter's argument
            raise CannotSplit(
                f"line {n.lineno}: reads {n.name} other than in {{{{ ... }}}} or "
                f"{{% if {n.name} %}}"
            )
    tree.set_environment(env)
    try:  # analysing compiles: an unknown filter or test is found here
        reads = jinja2.meta.find_undeclared_variables(tree) - {SLOT} - {FLAG + t for t in tested}
    except jinja2.TemplateError:
        raise CannotSplit(None) from None  # rendering reports it, with file and line
    # Each output assigned at the top level lands in the context's vars, unfinalized and
    # unescaped: read back without a call per output (Jinja routes calls through
    # ``Context.call``, most of an evaluation's cost).
    captures = [
        nodes.Assign(nodes.Name(f"{CAPTURE}{i}", "store"), expr, lineno=expr.lineno)
        for i, expr in enumerate(outputs)
    ]
    try:
        template = _compile(env, tree, name, filename)
        evaluator = _compile(env, nodes.Template(captures), name, filename)
    except jinja2.TemplateError:
        raise CannotSplit(None) from None
    return Split(
        template,
        evaluator,
        len(outputs),
        tuple(sorted(tested)),
        tuple(sorted(reads)),
        tuple(f"{CAPTURE}{i}" for i in range(len(outputs))),
    )


def evaluate(split_: Split, context: dict[str, Any]) -> list[object]:
    """What each recipient output prints for this context, unfinalized, in one pass."""
    template = split_.outputs
    env = template.environment
    # What ``Template.new_context`` makes (the globals, the context over them), merged once
    # here and handed over shared, not copied again.
    globals_ = template.globals
    names = {**globals_, **context}
    run = new_context(env, template.name, template.blocks, names, True, globals_)
    for _ in template.root_render_func(run):
        pass
    found = run.vars
    return [found.get(name) for name in split_.captures]


def flags(split_: Split, context: dict[str, Any]) -> dict[str, bool]:
    """The truth of each recipient name the template tests, as the flags it reads."""
    return {FLAG + name: bool(context.get(name)) for name in split_.tested}


def _loaded(expr: nodes.Node) -> set[str]:
    names = {n.name for n in expr.find_all(nodes.Name) if n.ctx == "load"}
    if isinstance(expr, nodes.Name) and expr.ctx == "load":
        names.add(expr.name)
    return names


def _names(names: set[str]) -> str:
    return ", ".join(sorted(names))


def _tested(test: nodes.Node) -> str | None:
    inner = test.node if isinstance(test, nodes.Not) else test
    if isinstance(inner, nodes.Name) and inner.name in RECIPIENT:
        return inner.name
    return None


def _call(function: str, args: list[nodes.Expr], lineno: int) -> nodes.Call:
    call = nodes.Call(nodes.Name(function, "load"), args, [], None, None, lineno=lineno)
    call.set_lineno(lineno)
    return call


def _compile(
    env: jinja2.Environment, tree: nodes.Template, name: str, filename: str | None
) -> jinja2.Template:
    tree.set_environment(env)
    code = env.compile(tree, name, filename)
    # A plain dict of the globals, as ``templates.read`` leaves the templates' (see there).
    return env.template_class.from_code(env, code, dict(env.make_globals(None)))
