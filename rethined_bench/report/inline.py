"""The small inline Markdown subset used in captions (`code`, **bold**, *italic*), converted for LaTeX and HTML."""

from __future__ import annotations

import re
from collections.abc import Callable

_TOKEN = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*]+)\*")


def convert_inline(text: str, escape: Callable[[str], str], code: str, bold: str, italic: str) -> str:
    """Escape ``text`` and rewrite the inline markup with the ``{}`` templates ``code``, ``bold`` and ``italic``."""
    out, position = [], 0
    for match in _TOKEN.finditer(text):
        out.append(escape(text[position:match.start()]))
        inner, template = next((group, tpl) for group, tpl in zip(match.groups(), (code, bold, italic)) if group)
        out.append(template.format(escape(inner)))
        position = match.end()
    out.append(escape(text[position:]))
    return "".join(out)
