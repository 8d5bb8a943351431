"""Real servers (PostgreSQL, Dovecot, Postfix) that tests start on 127.0.0.1 in a temp folder.

The fixtures live in ``tests.servers.fixtures``; a test module asks for them with
``pytest_plugins = ["tests.servers.fixtures"]``.
"""
