"""``crm serve``: the browser front end of crm-bridge (Flask + Jinja2, served by waitress).

A face like the CLI: it talks to :mod:`crm_bridge.crm_core` only, never to
connectors or the sync engine.  :func:`crm_bridge.web.app.create_app` makes the app.
"""
