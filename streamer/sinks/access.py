"""Who may talk to the server (sans-I/O: plain values in, a verdict out).

Three checks, applied to every HTTP request and WebSocket upgrade:

- `host_ok`: the `Host` header names this daemon. A DNS-rebinding attack makes a browser send
  requests for `http://attacker.example:8765/` to 127.0.0.1; the browser then believes the page
  and the daemon share an origin, and only the `Host` header (`attacker.example:8765`) betrays it.
  Accepted: IP literals (a rebinding attack always uses a name), `localhost`, the bound host name,
  the machine's own names when bound to every interface, and `server.allowed_hosts` (`"*"` = any).
  It holds for every request form: a request without `Host` (HTTP/1.0, 0.9) is refused, since
  nothing then says which site the client meant, and an absolute-form request line
  (`GET http://evil.example/ HTTP/1.1`) is judged by the name in it as well (`target_host`),
  since RFC 9112 §3.2.2 makes that name, not the `Host` header, the one the request is for.
- `origin_ok`: a browser request from another site's page carries that site's `Origin`. Accepted:
  no `Origin` (non-browser clients: the token protects them), the daemon's own origin (the
  caption pages it serves), and `server.allowed_origins` (`"*"` = any).
- `token_ok`: `Authorization: Bearer TOKEN` or `?token=TOKEN`, compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "*"})


def split_host(host_header: str) -> str:
    """The host name of a `Host` header value, lower-case, without port or IPv6 brackets."""
    h = host_header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[1:end] if end > 0 else h
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bound_names(bind_host: str, machine_names: Iterable[str] = ()) -> frozenset[str]:
    """Host names that mean this daemon for a server bound to `bind_host`."""
    names = {"localhost", split_host(bind_host)}
    if bind_host in WILDCARD_HOSTS:
        names.update(n.lower().rstrip(".") for n in machine_names if n)
    names.discard("")
    return frozenset(names)


def host_ok(host_header: str | None, names: frozenset[str], allowed: Iterable[str]) -> bool:
    allowed_set = {a.strip().lower() for a in allowed}
    if "*" in allowed_set:
        return True
    if host_header is None:
        return False  # no name at all: the check could not hold, so it refuses
    name = split_host(host_header)
    if not name:
        return False
    return is_ip(name) or name in names or name in allowed_set or name.endswith(".localhost")


def target_host(raw_target: str) -> str | None:
    """The authority named by an absolute-form request target (`http://name:port/path`), "" if
    the target is absolute but names none, None for the usual origin-form (`/path`) or `*`."""
    if raw_target.startswith("/") or raw_target == "*":
        return None
    try:
        return urlsplit(raw_target).netloc.rpartition("@")[2]
    except ValueError:
        return ""


def address_key(peer: str | None) -> str:
    """Whom a per-address limit counts a connection against (sans-I/O).

    An IPv4 address is itself (IPv4-mapped IPv6 included, so one host is not two); an IPv6
    address counts by its /64, the block one subscriber gets, else one host could take a new
    address per connection. Loopback counts like any address: every local process shares it.
    """
    if not peer:
        return "unknown"
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip.is_loopback:
            return str(ip)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def origin_ok(allowed: Iterable[str] | None, origin: str | None, host_header: str | None) -> bool:
    """A missing Origin is allowed: the check protects browsers' users, the token the rest."""
    if origin is None:
        return True
    allowed_set = {o.strip().rstrip("/").lower() for o in (allowed or ())}
    o = origin.strip().rstrip("/").lower()
    if "*" in allowed_set or o in allowed_set:
        return True
    if host_header is None or o == "null":
        return False
    parts = urlsplit(o)
    # Same origin: a page the daemon served itself (the Host was checked separately).
    return parts.scheme in ("http", "https") and parts.netloc == host_header.strip().lower()


def token_ok(expected: str | None, headers: Mapping[str, str], query: str) -> bool:
    if expected is None:
        return True
    offered: list[str] = []
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        offered.append(auth[7:].strip())
    offered.extend(parse_qs(query, keep_blank_values=True).get("token", []))
    want = expected.encode()
    # Every offered value is compared, in constant time each, so timing tells nothing.
    ok = False
    for value in offered:
        ok |= hmac.compare_digest(value.encode(), want)
    return ok
