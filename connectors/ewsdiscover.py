"""POX Autodiscover for Exchange Server: the EWS URL of a mailbox.

Exchange 2016/2019/SE answer the "plain old XML" Autodiscover request at
``/autodiscover/autodiscover.xml``: the client POSTs the mailbox address
and reads ``Account/Protocol[Type=EXCH]/EwsUrl`` from the answer.  Tried, in
this order: the configured ``autodiscover_url``, else
``https://DOMAIN/autodiscover/autodiscover.xml`` and
``https://autodiscover.DOMAIN/autodiscover/autodiscover.xml``.  HTTP 301/302
redirects (to https only), ``Action redirectUrl`` and ``Action redirectAddr``
are followed, at most ten times.  A refused password is an AuthError at
once; when nothing answers, SourceUnavailable names what was tried.  The EWS
URL found meets the rule of a configured ``server``: https://, or http://
only to a loopback host with allow_plaintext = true (else the password would
travel in clear text); a plain one is refused and the next candidate tried.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin, urlsplit

from crm_bridge.connectors.base import AuthError, SourceUnavailable, is_loopback

REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MAX_HOPS = 10


def _plain_allowed(url: str, allow_plaintext: bool) -> bool:
    """Whether an http:// URL may carry the password: only to a loopback host with allow_plaintext = true."""
    return url.startswith("http://") and allow_plaintext and is_loopback(urlsplit(url).hostname or "")


def _request(address: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\r\n<Autodiscover xmlns="{REQUEST_NS}">\r\n  <Request>\r\n'
            f"    <EMailAddress>{address}</EMailAddress>\r\n"
            f"    <AcceptableResponseSchema>{RESPONSE_NS}</AcceptableResponseSchema>\r\n"
            "  </Request>\r\n</Autodiscover>\r\n").encode()


def _parse(body: bytes) -> dict[str, str]:
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    root = etree.fromstring(body, parser)
    ns = {"o": RESPONSE_NS}
    out: dict[str, str] = {}
    for path, key in (("//o:Account/o:Action", "action"), ("//o:Account/o:RedirectUrl", "redirect_url"),
                      ("//o:Account/o:RedirectAddr", "redirect_addr"), ("//o:Error/o:Message", "error")):
        found = root.xpath(path, namespaces=ns)
        if found and found[0].text:
            out[key] = found[0].text.strip()
    for proto in root.xpath("//o:Account/o:Protocol", namespaces=ns):
        kind = (proto.findtext(f"{{{RESPONSE_NS}}}Type") or "").strip()
        url = (proto.findtext(f"{{{RESPONSE_NS}}}EwsUrl") or "").strip()
        if url and kind in ("EXCH", "EXPR") and "ews_url" not in out:
            out["ews_url"] = url
    return out


def discover(address: str, username: str, password: str, url: str | None, *, verify: Any = True,
             timeout: int = 30, auth: str = "basic", allow_plaintext: bool = False) -> str:
    import requests

    domain = address.rpartition("@")[2]
    candidates = [url] if url else [f"https://{domain}/autodiscover/autodiscover.xml",
                                    f"https://autodiscover.{domain}/autodiscover/autodiscover.xml"]
    tried: list[str] = []
    plain: list[str] = []  # EWS URLs refused: plain http
    seen_addresses = {address.lower()}
    if auth == "ntlm":
        from requests_ntlm import HttpNtlmAuth

        credentials: Any = HttpNtlmAuth(username, password)
    elif auth == "oauth2":  # ``password`` is the access token
        def credentials(r: Any) -> Any:
            r.headers["Authorization"] = "Bearer " + password
            return r
    else:
        credentials = (username, password)
    with requests.Session() as session:
        hops = 0
        queue = list(candidates)
        while queue and hops <= MAX_HOPS:
            target = queue.pop(0)
            tried.append(target)
            hops += 1
            try:
                resp = session.post(target, data=_request(address), auth=credentials, verify=verify, timeout=timeout,
                                    headers={"Content-Type": "text/xml; charset=utf-8"}, allow_redirects=False)
            except requests.exceptions.SSLError:
                tried[-1] += " (TLS certificate not trusted)"
                continue
            except requests.exceptions.RequestException as exc:
                tried[-1] += f" ({type(exc).__name__})"
                continue
            if resp.status_code == 401:
                what = "access token" if auth == "oauth2" else f"password of {username}"
                raise AuthError(f"autodiscover: the server refused the {what} (HTTP 401)")
            if resp.status_code in (301, 302, 307, 308) and resp.headers.get("Location"):
                new = urljoin(target, resp.headers["Location"])
                plain_to_same = urlsplit(target).scheme == "http" and urlsplit(new)[:2] == urlsplit(target)[:2]
                if urlsplit(new).scheme != "https" and not plain_to_same:  # never from https down to http
                    tried[-1] += " (redirect to plain http refused)"
                    continue
                queue.insert(0, new)
                continue
            if resp.status_code != 200:
                tried[-1] += f" (HTTP {resp.status_code})"
                continue
            try:
                answer = _parse(resp.content)
            except Exception:  # noqa: BLE001 - not XML: try the next candidate
                tried[-1] += " (not an Autodiscover answer)"
                continue
            if answer.get("ews_url"):
                ews_url = answer["ews_url"]
                if ews_url.startswith("https://") or _plain_allowed(ews_url, allow_plaintext):
                    return ews_url
                plain.append(ews_url)
                tried[-1] += f" (EWS URL {ews_url} refused: not https)"
                continue
            action = answer.get("action", "").lower()
            if action == "redirecturl" and answer.get("redirect_url", "").startswith("https://"):
                queue.insert(0, answer["redirect_url"])
                continue
            if action == "redirectaddr" and answer.get("redirect_addr"):
                new_address = answer["redirect_addr"].lower()
                if new_address in seen_addresses:
                    break
                seen_addresses.add(new_address)
                address = new_address
                queue.insert(0, target)
                continue
            tried[-1] += f" ({answer.get('error', 'no EWS URL in the answer')})"
    if plain:
        raise SourceUnavailable(f"autodiscover for {address} answered only with the EWS URL {plain[0]}, which would "
                                "send the password in clear text; set server to the https:// EWS URL (plain http only "
                                "to a loopback host with allow_plaintext = true)")
    raise SourceUnavailable(f"autodiscover found no EWS URL for {address}; tried " + ", ".join(tried)
                            + "; set server to the EWS URL")
