"""Compose: Digest -> outgoing message (templates, inlined HTML, the size guard, MIME, DKIM).

Pure but for reading the templates and the DKIM key once per run (``load_masthead``,
making a ``Composer``). The face:

    spec      = ComposeSpec(templates_dir, load_masthead(config), key, now)
    message   = Composer(spec).compose(digest)          # reference=True: the slow reference
    messages  = compose_many(spec, digests, count=n, bodies=...)              # on a pool
    messages  = select_and_compose(spec, selecting, requests, count=n, bodies=...)
    message   = transactional("confirm", to, {"confirm": url}, masthead, now=now)  # a sign-up's
    warnings  = check_templates(templates_dir)          # TemplateError naming file and line

``bodies`` is the caller's choice: whether the messages keep their HTML and text (a preview
writes the HTML) or only the bytes to send come back (SMTP). How the fast path works, and
the reference it is tested against: ``composer``'s docstring.
"""

from newsletter.compose.check import check_templates
from newsletter.compose.composer import Composer, ComposeSpec
from newsletter.compose.masthead import DkimKey, Masthead, load_masthead
from newsletter.compose.pool import compose_many, select_and_compose
from newsletter.compose.transactional import Transactional, TransactionalKind, transactional
from newsletter.models import Outgoing

__all__ = [
    "ComposeSpec",
    "Composer",
    "DkimKey",
    "Masthead",
    "Outgoing",
    "Transactional",
    "TransactionalKind",
    "check_templates",
    "compose_many",
    "load_masthead",
    "select_and_compose",
    "transactional",
]
