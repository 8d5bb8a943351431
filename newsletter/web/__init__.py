"""What ``newsletter serve`` answers on the web, and the tokens its links carry.

``app.py``: the Starlette application and its routes; the pages in ``unsubscribe.py``,
``manage.py`` and ``signup.py`` over what ``site.py`` shares; ``forms.py`` (bodies, the form
token), ``pages.py`` (the templates), ``protect.py`` (headers, the request deadline, client
addresses, redaction), ``outbox.py`` (the sign-up emails' queue), ``server.py`` (uvicorn in a
thread of the daemon). ``archive.py`` (past days' papers by public topic), ``atom.py`` (the
feeds) and ``publish.py`` (pages and feeds by path, conditional GET, the routes the app
mounts): the public archive. ``tokens.py``: signed tokens and the keys that sign them, which
compose puts into every message. Nothing is imported here, so that composing a message
(``tokens``) loads no server, store or HTTP client.
"""
