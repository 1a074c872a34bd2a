"""crm-bridge: a CRM that lives inside the groupware a company already uses.

The repository's top-level folders (connectors/, sync/, crm_core/, web/) and
cli.py are installed as the subpackages of this one package, ``crm_bridge``,
so that their short names never meet another distribution's top-level
``cli``, ``sync`` or ``connectors`` module.
"""
