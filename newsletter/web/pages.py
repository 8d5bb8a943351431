"""The web pages: Jinja templates under ``templates/web/``, which an operator overrides file by
file from ``newsletter.templates_dir`` (``templates_dir/web/home.html.j2``), like the email
templates; the stylesheet ``site.css`` too. Autoescaped; no template has a script or an
inline style (the CSP refuses both).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

WEB = "web"
STYLESHEET = "site.css"


@functools.cache
def builtin_templates_dir() -> Path:
    """Inside the wheel the templates sit in the package; in a checkout, at the top level.
    (compose has its own finder: web must not import compose, which imports web's tokens.)"""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / WEB / "base.html.j2").is_file():
            return candidate
    raise FileNotFoundError(f"the web templates are not next to {here}")


@functools.lru_cache(maxsize=8)
def environment(templates_dir: Path | None) -> jinja2.Environment:
    """One environment per templates folder (a reload that changes it gets a new one)."""
    searchpath = [str(templates_dir / WEB)] if templates_dir else []
    searchpath.append(str(builtin_templates_dir() / WEB))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(searchpath),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


def render(templates_dir: Path | None, name: str, context: dict[str, Any]) -> str:
    return environment(templates_dir).get_template(name).render(**context)


def stylesheet(templates_dir: Path | None) -> bytes:
    """The one stylesheet, the operator's when there is one."""
    for folder in ([templates_dir / WEB] if templates_dir else []) + [
        builtin_templates_dir() / WEB
    ]:
        path = folder / STYLESHEET
        if path.is_file():
            return path.read_bytes()
    return b""
