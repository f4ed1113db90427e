"""MkDocs hook: formulas as MathML, rendered at build time.

``pymdownx.arithmatex`` (generic mode) marks ``$...$`` and ``$$...$$`` in the
Markdown; this hook replaces each marked formula by MathML from ``latex2mathml``,
which browsers draw natively: the site needs no JavaScript and no network for
its formulas. A formula ``latex2mathml`` cannot read fails the build.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


def _mathml(latex: str, display: str, page: str) -> str:
    try:
        return convert(html.unescape(latex).strip(), display=display)
    except Exception as err:  # latex2mathml raises many types; the build must name the formula
        raise ValueError(f"{page}: cannot render the formula {latex!r}: {err}") from err


def on_page_content(html_text: str, page, **kwargs) -> str:
    """Replace the formulas arithmatex marked by their MathML."""
    where = page.file.src_uri
    html_text = _BLOCK.sub(
        lambda m: f'<div class="math-block">{_mathml(m.group(1), "block", where)}</div>',
        html_text)
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline", where), html_text)
