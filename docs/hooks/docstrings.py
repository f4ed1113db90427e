"""MkDocs hook: Sphinx roles in docstrings shown as plain code.

The package's docstrings cross-reference with Sphinx roles (``:class:`~a.B```);
mkdocstrings renders docstrings as Markdown, where such a role would show as
``:class:`` followed by code. This hook keeps the code and drops the role (and,
as Sphinx does for ``~``, the module path).
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):<code>(~?)([^<]*)</code>")


def _short(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html, **kwargs):
    """Drop the roles from the rendered page."""
    return _ROLE.sub(_short, html)
