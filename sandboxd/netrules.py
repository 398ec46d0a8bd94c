"""Egress allowlist rules and the decision for one destination.

A rule is a domain (`example.org`), a wildcard domain (`*.example.com`, subdomains only), either
with an optional port, or an IP / CIDR with an optional port (`10.1.2.0/24:5432`,
`[fd00::1]:8080`). A rule without a port means 80 and 443. Names match domain rules only, IP
literals match IP/CIDR rules only; a name that resolves to a private, loopback, link-local,
multicast or otherwise special address is refused unless an IP/CIDR rule names that address,
or the daemon's operator trusts that name to resolve privately (`trusted_private_names`: a local
package mirror), and then only to a private address, never loopback, link-local or metadata.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = frozenset({80, 443})
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^(\*\.)?({_LABEL}\.)*{_LABEL}$")
METADATA = (ipaddress.ip_network("169.254.169.254/32"), ipaddress.ip_network("fd00:ec2::254/128"))


@dataclass(frozen=True)
class Rule:
    text: str
    domain: str | None = None  # "example.com" or "*.example.com"
    network: IPNetwork | None = None
    ports: frozenset[int] = DEFAULT_PORTS

    def matches_name(self, host: str, port: int) -> bool:
        if self.domain is None or port not in self.ports:
            return False
        if self.domain.startswith("*."):
            return host.endswith(self.domain[1:])
        return host == self.domain

    def matches_ip(self, ip: IPAddress, port: int) -> bool:
        return self.network is not None and port in self.ports and ip in self.network


def _port(text: str) -> frozenset[int]:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} must be a number from 1 to 65535")
    return frozenset({int(text)})


def parse_rule(raw: str) -> Rule:
    """Parse one rule; ValueError says what is wrong with it."""
    text = raw.strip().lower()
    if not text or len(text) > 300:
        raise ValueError("a rule must be 1 to 300 characters")
    ports = DEFAULT_PORTS
    if text.startswith("["):  # [v6 address or network]:port
        inside, _, rest = text[1:].partition("]")
        if not rest.startswith(":"):
            raise ValueError("a bracketed IPv6 rule needs a port: [addr]:port")
        return Rule(raw, network=ipaddress.ip_network(inside, strict=False), ports=_port(rest[1:]))
    try:  # a bare address or network (IPv6 ones cannot carry a port without brackets)
        return Rule(raw, network=ipaddress.ip_network(text, strict=False))
    except ValueError:
        pass
    if text.count(":") == 1:
        text, port_text = text.split(":")
        ports = _port(port_text)
        try:
            return Rule(raw, network=ipaddress.ip_network(text, strict=False), ports=ports)
        except ValueError:
            pass
    text = text.rstrip(".")
    if not _DOMAIN.match(text):
        raise ValueError(f"{raw!r} is neither a domain, a *.wildcard domain nor an IP/CIDR")
    return Rule(raw, domain=text, ports=ports)


def _more_than_private(ip: IPAddress) -> bool:
    """Loopback, link-local, metadata and the like: never reachable through a name."""
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or any(ip in n for n in METADATA)
        or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None)
    )


def is_special(ip: IPAddress) -> bool:
    """Addresses a name must never silently lead to (DNS rebinding, metadata services)."""
    return ip.is_private or _more_than_private(ip)


def is_private_only(ip: IPAddress) -> bool:
    """A private-network address (RFC 1918, ULA) and nothing more special than that."""
    return ip.is_private and not _more_than_private(ip)


def trusted_name(raw: str) -> str:
    """A name `trusted_private_names` may hold: an exact domain, no wildcard, no port."""
    name = raw.strip().lower().rstrip(".")
    if name.startswith("*.") or not _DOMAIN.match(name):
        raise ValueError(f"{raw!r} is not an exact domain name")
    return name


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    address: str | None = None


class Allowlist:
    def __init__(self, rules: list[Rule], trusted_private: frozenset[str] = frozenset()) -> None:
        self.rules = rules
        self.trusted_private = trusted_private

    def literal(self, ip: IPAddress, port: int) -> Decision:
        if any(r.matches_ip(ip, port) for r in self.rules):
            return Decision(True, "IP/CIDR rule", str(ip))
        return Decision(False, f"IP literal {ip} port {port} is not allowed by any IP/CIDR rule")

    def name_allowed(self, host: str, port: int) -> bool:
        return any(r.matches_name(host, port) for r in self.rules)

    def resolved(self, host: str, port: int, addresses: list[IPAddress]) -> Decision:
        """Pick the first address the rules let a name lead to."""
        if not addresses:
            return Decision(False, f"{host} does not resolve")
        trusted = host.lower().rstrip(".") in self.trusted_private
        for ip in addresses:
            if not is_special(ip) or any(r.matches_ip(ip, port) for r in self.rules):
                return Decision(True, "domain rule", str(ip))
            if trusted and is_private_only(ip):
                return Decision(True, "domain rule, a name trusted to resolve privately", str(ip))
        return Decision(
            False,
            f"{host} resolves to {addresses[0]}, a private or special "
            "address that no IP/CIDR rule allows",
        )
