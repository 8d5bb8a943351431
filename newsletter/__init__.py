"""papers-newsletter: trending research papers in your subscribers' inboxes."""

__version__ = "0.1.0"
