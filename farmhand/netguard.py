"""Which addresses a submitter's clip URL may reach from the owner's PC, and the proxy that holds
every web download to it.

A farmhand runs strangers' jobs on someone's gaming PC, inside their home network. A clip URL is
the submitter's choice, so without a guard it reaches whatever the PC can reach: the router's
admin page (``http://192.168.1.1/``), services on the PC itself (``127.0.0.1``), the cloud
metadata address (``169.254.169.254``), the board's own internal address, and the job's error
text tells the submitter what answered. :class:`AddressPolicy` allows public internet addresses
only, plus the networks the owner lists in ``FARMHAND_ALLOW_NETWORKS``.

Why a proxy: yt-dlp follows redirects, fetches HLS/DASH fragments and pages of other hosts, all
inside its own HTTP stack. Checking the URL before handing it over would miss every one of
those, and checking a name and then letting yt-dlp resolve it again leaves a DNS-rebinding gap
(a name that answers a public address to the check and 127.0.0.1 to the connect). So each web
download gets a :class:`GuardedProxy` on 127.0.0.1 and yt-dlp is told to use it (its ``proxy``
option, a public, documented setting): every request it makes — the first, each redirect, each
fragment — arrives here as ``CONNECT host:port`` (https) or ``GET http://host/...`` (http). The
proxy resolves the host once, refuses when no address is allowed, and connects to the very
address it checked. TLS stays end to end: the proxy only relays the tunnel.

A refused address is never contacted, so nothing of it can leak into an error; what was refused
is kept on the proxy (``refusals``) for the caller to report as one permanent error.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import logging
import secrets
import select
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

# Beyond what ``ipaddress`` calls private: shared address space (carrier-grade NAT, RFC 6598),
# which is the ISP's network or a VPN's (Tailscale), never a public site.
_CGNAT = ip_network("100.64.0.0/10")
# IPv6 forms that carry an IPv4 address a gateway may forward to: NAT64 (RFC 6052).
_NAT64 = ip_network("64:ff9b::/96")

HEAD_LIMIT = 64 * 1024  # a request head longer than this is not from yt-dlp
CONNECT_TIMEOUT_S = 20.0
IDLE_TIMEOUT_S = 60.0


def is_public(address: str | Address) -> bool:
    """Whether ``address`` is a public internet address: not loopback, private (RFC 1918, ULA),
    link-local (169.254/16 with the cloud metadata address, fe80::/10), multicast, reserved,
    unspecified, shared (CGNAT 100.64/10), documentation or benchmark space; an IPv6 address
    that embeds an IPv4 one (mapped, 6to4, NAT64) is judged by the IPv4 address it carries."""
    ip = ip_address(address)
    if isinstance(ip, IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
        if ip.is_site_local:
            return False
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or ip.is_loopback:
        return False
    if ip.is_link_local or ip.is_private or ip in _CGNAT:
        return False
    return ip.is_global


def parse_networks(items: str | Iterable[str]) -> tuple[Network, ...]:
    """Networks from a comma list (or list) of CIDRs and addresses: ``192.168.1.0/24``,
    ``10.0.0.5``, ``fd00::/8``. A host address stands for itself (/32, /128); host bits of a
    CIDR are ignored (``192.168.1.7/24`` is ``192.168.1.0/24``). Raises ``ValueError`` naming
    the item that is neither."""
    texts = items.split(",") if isinstance(items, str) else list(items)
    networks: list[Network] = []
    for text in (str(t).strip() for t in texts):
        if not text:
            continue
        try:
            network = ip_network(text, strict=False)
        except ValueError:
            raise ValueError(
                f"{text!r} is not an IP address or network (examples: 192.168.1.0/24, "
                "10.0.0.5, fd00::/8; host names are not accepted)"
            ) from None
        if network not in networks:
            networks.append(network)
    return tuple(networks)


@dataclass(frozen=True)
class AddressPolicy:
    """Public internet addresses, plus the owner's ``allow`` networks (for a LAN media server)."""

    allow: tuple[Network, ...] = ()

    @classmethod
    def allowing(cls, items: str | Iterable[str]) -> AddressPolicy:
        """A policy that also allows the networks ``items`` (see :func:`parse_networks`)."""
        return cls(parse_networks(items))

    def permits(self, address: str | Address) -> bool:
        """Whether a submitter's URL may connect to ``address``."""
        ip = ip_address(address)
        candidates = [ip]
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)  # ::ffff:10.0.0.5 is allowed with 10.0.0.0/8
        for candidate in candidates:
            if any(candidate in net for net in self.allow if net.version == candidate.version):
                return True
        return is_public(ip)


# The policy of this farmhand process: public addresses only until `farmhand run` installs the
# owner's setting (farmhand.cli), read by every web download (farmhand.fetch).
_installed = AddressPolicy()


def install_policy(policy: AddressPolicy) -> None:
    """Make ``policy`` the one web downloads of this process use (``farmhand run`` does, with
    ``FARMHAND_ALLOW_NETWORKS``)."""
    global _installed
    _installed = policy


def installed_policy() -> AddressPolicy:
    """The policy web downloads of this process use: public addresses only unless
    :func:`install_policy` allowed more."""
    return _installed


@dataclass(frozen=True)
class Refusal:
    """A connection the proxy refused: the host asked for and what it resolved to. The
    addresses are for the owner's log, not for the job's error (see farmhand.fetch)."""

    host: str
    port: int
    addresses: tuple[str, ...]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (a literal address is
    itself). Raises ``OSError`` when it does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _Refused(Exception):
    pass


class _Unreachable(Exception):
    pass


@dataclass
class GuardedProxy:
    """An HTTP forward proxy on 127.0.0.1 (plain requests and ``CONNECT`` tunnels) that lets a
    download reach only what ``policy`` permits; see the module docstring.

    Use it as a context manager around one download and give :attr:`url` to the client as its
    proxy. The URL carries a random password, so other programs on the PC cannot use the proxy
    while it runs. ``resolve`` is how host names become addresses (tests give their own);
    whatever it answers is checked, and the connection goes to the checked address.
    """

    policy: AddressPolicy
    resolve: Callable[[str, int], list[str]] = resolve
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    refusals: list[Refusal] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # permitted hosts it could not reach

    def __post_init__(self) -> None:
        self._password = secrets.token_urlsafe(18)
        self._expected = "Basic " + base64.b64encode(f"farmhand:{self._password}".encode()).decode()
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The proxy address to give a client, with its credentials."""
        if self._server is None:
            raise RuntimeError("the proxy is not running; use it as a context manager")
        port = self._server.server_address[1]
        return f"http://farmhand:{self._password}@127.0.0.1:{port}"

    def __enter__(self) -> GuardedProxy:
        self._server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="netguard-proxy", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------ used by the handler

    def authorized(self, headers: dict[str, str]) -> bool:
        given = headers.get("proxy-authorization", "").encode("latin-1")
        return hmac.compare_digest(given, self._expected.encode("latin-1"))

    def open(self, host: str, port: int) -> socket.socket:
        """A connection to ``host``:``port`` at an address the policy permits: resolved once,
        checked, and connected to as checked. Raises ``_Refused`` (recorded) or
        ``_Unreachable``."""
        try:
            addresses = self.resolve(host, port)
        except OSError as exc:
            raise self._unreachable(f"cannot resolve {host} ({exc.strerror or exc})") from None
        allowed = [a for a in addresses if _permits(self.policy, a)]
        if not allowed:
            refusal = Refusal(host, port, tuple(addresses))
            with self._lock:
                self.refusals.append(refusal)
            log.warning(
                "refused a connection to %s:%d (%s): not a public address and not in "
                "FARMHAND_ALLOW_NETWORKS",
                host,
                port,
                ", ".join(addresses) or "no address",
            )
            raise _Refused(host)
        error: OSError | None = None
        for address in allowed:
            try:
                upstream = socket.create_connection((address, port), self.connect_timeout_s)
            except OSError as exc:
                error = exc
                continue
            upstream.settimeout(self.idle_timeout_s)
            return upstream
        reason = (error.strerror or str(error)) if error is not None else "no address"
        raise self._unreachable(f"cannot connect to {host}:{port} ({reason})")

    def _unreachable(self, why: str) -> _Unreachable:
        with self._lock:
            self.failures.append(why)
        return _Unreachable(why)


def _permits(policy: AddressPolicy, address: str) -> bool:
    try:
        return policy.permits(address.split("%", 1)[0])  # fe80::1%eth0: the scope is no part
    except ValueError:
        return False


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, address, handler, proxy: GuardedProxy) -> None:
        self.proxy = proxy
        super().__init__(address, handler)


class _ProxyHandler(socketserver.BaseRequestHandler):
    """One client connection: a CONNECT tunnel, or one plain HTTP request and its answer."""

    server: _ProxyServer

    def handle(self) -> None:
        try:
            self._serve()
        except OSError:
            pass  # either side went away mid-exchange: the client sees its connection end

    def _serve(self) -> None:
        proxy = self.server.proxy
        client: socket.socket = self.request
        client.settimeout(proxy.idle_timeout_s)
        try:
            head, rest = _read_head(client)
        except (OSError, ValueError):
            return
        try:
            method, target, version, headers = _parse_head(head)
        except ValueError:
            _answer(client, 400, "Bad Request")
            return
        if not proxy.authorized(headers):
            _answer(client, 407, "Proxy Authentication Required",
                    'Proxy-Authenticate: Basic realm="farmhand"\r\n')  # fmt: skip
            return
        if method == "CONNECT":
            self._tunnel(client, target, rest)
        else:
            self._forward(client, method, target, version, head, rest)

    def _tunnel(self, client: socket.socket, target: str, rest: bytes) -> None:
        try:
            host, port = _host_port(target, default_port=443)
        except ValueError:
            _answer(client, 400, "Bad Request")
            return
        upstream = self._open(client, host, port)
        if upstream is None:
            return
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            _relay(client, upstream, self.server.proxy.idle_timeout_s)

    def _forward(
        self, client: socket.socket, method: str, target: str, version: str, head: bytes,
        rest: bytes,
    ) -> None:  # fmt: skip
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            _answer(client, 400, "Bad Request")  # https comes as CONNECT; nothing else is ours
            return
        try:
            port = url.port or 80
        except ValueError:
            _answer(client, 400, "Bad Request")
            return
        upstream = self._open(client, url.hostname, port)
        if upstream is None:
            return
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        lines = head.decode("latin-1").split("\r\n")[1:]
        kept = [
            line for line in lines
            if line and line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP
        ]  # fmt: skip
        # One request per connection, both ways: the client's next request may be for another
        # host, and must come through the check again (so the answer says close, too).
        request = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""])
        with upstream:
            upstream.sendall(request.encode("latin-1") + rest)
            try:
                answer, body = _read_head(upstream)
                while answer[9:10] == b"1":  # 100 Continue and the like: pass on, read on
                    client.sendall(answer + b"\r\n\r\n")
                    answer, body = _read_head(upstream, body)
            except (OSError, ValueError):
                _answer(client, 502, "Bad Gateway", body="the host gave no answer\n")
                return
            client.sendall(_closing(answer) + body)
            _relay(client, upstream, self.server.proxy.idle_timeout_s)

    def _open(self, client: socket.socket, host: str, port: int) -> socket.socket | None:
        try:
            return self.server.proxy.open(host, port)
        except _Refused:
            _answer(client, 403, "Forbidden", body="refused by the farmhand's address policy\n")
        except _Unreachable as exc:
            log.info("proxy: %s", exc)
            _answer(client, 502, "Bad Gateway", body="the farmhand cannot reach that host\n")
        return None


_HOP_BY_HOP = {"proxy-authorization", "proxy-connection", "connection", "keep-alive", "te",
               "upgrade"}  # fmt: skip


def _read_head(sock: socket.socket, data: bytes = b"") -> tuple[bytes, bytes]:
    """A message head (up to the blank line, ``data`` being what was read of it already) and
    whatever of the body came with it."""
    while b"\r\n\r\n" not in data:
        if len(data) > HEAD_LIMIT:
            raise ValueError("request head too long")
        chunk = sock.recv(8192)
        if not chunk:
            raise ValueError("connection closed before the request head ended")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _closing(head: bytes) -> bytes:
    """A response head with its connection headers replaced by ``Connection: close``."""
    lines = head.decode("latin-1").split("\r\n")
    kept = [lines[0]] + [
        line for line in lines[1:]
        if line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP
    ]  # fmt: skip
    return "\r\n".join([*kept, "Connection: close", "", ""]).encode("latin-1")


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method.upper(), target, version, headers


def _host_port(target: str, *, default_port: int) -> tuple[str, int]:
    """``example.com:443`` or ``[2001:db8::1]:443`` as (host, port)."""
    if target.startswith("["):
        host, _, tail = target[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        host, _, port = target.rpartition(":") if ":" in target else (target, "", "")
    if not host:
        raise ValueError(target)
    number = int(port) if port else default_port
    if not 0 < number < 65536:
        raise ValueError(target)
    return host, number


def _answer(sock: socket.socket, status: int, reason: str, extra: str = "", body: str = "") -> None:
    data = body.encode()
    head = (f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Type: text/plain\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")  # fmt: skip
    with contextlib.suppress(OSError):
        sock.sendall(head.encode("latin-1") + data)


def _relay(client: socket.socket, upstream: socket.socket, idle_s: float) -> None:
    """Copy bytes both ways until the upstream side closes (or nothing moves for ``idle_s``).
    The client closing its side is passed on, and the answer still relayed."""
    peers = {client: upstream, upstream: client}
    reading = [client, upstream]
    while reading:
        ready, _, _ = select.select(reading, [], [], idle_s)
        if not ready:
            return
        for sock in ready:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                if sock is upstream:
                    return
                reading.remove(sock)
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)
                continue
            try:
                peers[sock].sendall(data)
            except OSError:
                return
