"""Answers for forms that web/static/inline.js sends in the background (progressive enhancement).

Without JavaScript a form posts, the view flashes a message and redirects
(the page reloads); with it, inline.js posts the same form with
``X-Requested-With: fetch`` and gets the message as JSON instead, then
removes the row or shows the message in place.  The views run the same code
either way, CSRF check included.
"""

from __future__ import annotations

from typing import Any

from flask import flash, g, jsonify, redirect, request

from crm_bridge.web import i18n


def wants_json() -> bool:
    return request.headers.get("X-Requested-With") == "fetch"


def tr(msgid: str, **params: Any) -> str:
    """``msgid`` in the page's language, its %(name)s fields filled in (the template escapes the result)."""
    text = i18n.gettext(g.get("lang", i18n.DEFAULT), msgid)
    return text % params if params else text


def answer(message: str, category: str, back: str) -> Any:
    """The flash-and-redirect of a form, or JSON {ok, message} for inline.js; ``message`` already translated."""
    if wants_json():
        return jsonify(ok=category == "ok", message=message), (200 if category == "ok" else 400)
    flash(message, category)
    return redirect(back)
