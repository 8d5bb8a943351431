"""What ``newsletter serve`` answers on the web, and the tokens its links carry.

``server.py``: the one-click unsubscribe endpoint (``UnsubscribeServer``), the home of the
pages to come. ``tokens.py``: signed unsubscribe tokens and the key that signs them, which
compose puts into every message. ``archive.py`` (past days' papers by public topic),
``atom.py`` (the feeds) and ``publish.py`` (pages and feeds by path, conditional GET, the
routes a web app mounts): the public archive. Nothing is imported here, so that composing a message
(``tokens``) loads no server, store or HTTP client.
"""
