"""The network guard: a submitter's clip URL reaches the public internet only — never the
owner's network or the PC itself, not at first, not after a redirect, not by DNS tricks — unless
the owner allows a network. Real servers on loopback addresses, real connections through the
real proxy; 127.0.0.2 plays "a public site" by being the one address a test's policy allows."""

from __future__ import annotations

import base64
import socket
from ipaddress import ip_network

import httpx
import pytest

from farmhand.fetch import AddressRefused, FetchPermanentError, fetch_url
from farmhand.netguard import AddressPolicy, GuardedProxy, is_public, parse_networks
from tests.farmhand.media_server import Served

MB = 1024**2
ROUTER_PAGE = b"<html><title>Router admin</title>session=SECRET-ROUTER-TOKEN</html>"
PUBLIC_STAND_IN = AddressPolicy.allowing("127.0.0.2")


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.5", "172.16.4.1", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "0.0.0.0", "224.0.0.251", "255.255.255.255", "240.0.0.1", "192.0.2.10",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "fec0::1",
    "::ffff:127.0.0.1", "::ffff:192.168.1.1", "64:ff9b::a00:5", "2002:c0a8:101::1",
])  # fmt: skip
def test_local_private_and_special_addresses_are_not_public(address):
    assert not is_public(address)
    assert not AddressPolicy().permits(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "151.101.1.69", "2606:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808"])  # fmt: skip
def test_public_addresses_are_permitted(address):
    assert is_public(address) and AddressPolicy().permits(address)


def test_the_owner_can_allow_networks_and_addresses():
    policy = AddressPolicy.allowing("192.168.1.0/24, 10.0.0.5,fd00::/8")
    assert policy.allow == (ip_network("192.168.1.0/24"), ip_network("10.0.0.5/32"),
                            ip_network("fd00::/8"))  # fmt: skip
    assert policy.permits("192.168.1.40") and policy.permits("10.0.0.5")
    assert policy.permits("::ffff:192.168.1.40") and policy.permits("fd00::7")
    assert not policy.permits("192.168.2.1") and not policy.permits("10.0.0.6")
    assert not policy.permits("127.0.0.1")
    with pytest.raises(ValueError, match=r"'nas\.local' is not an IP address or network"):
        parse_networks("192.168.1.0/24,nas.local")


async def test_url_on_loopback_is_refused_without_contacting_it(server, cache):
    server.files["/admin"] = Served(body=ROUTER_PAGE, content_type="text/html")
    url = f"{server.url}/admin"
    with pytest.raises(AddressRefused) as refused:
        await fetch_url(url, cache=cache, max_bytes=10 * MB, policy=AddressPolicy())
    assert isinstance(refused.value, FetchPermanentError) and not refused.value.retryable
    message = str(refused.value)
    assert message.startswith(f"{url}: 127.0.0.1 is a private or local network address")
    assert "FARMHAND_ALLOW_NETWORKS" in message
    assert server.requests == []  # never contacted
    assert cache.entries() == []


async def test_https_url_on_the_owners_network_is_refused_at_the_tunnel(server, cache):
    url = f"https://127.0.0.1:{server.port}/router/admin"  # yt-dlp asks the proxy to CONNECT
    with pytest.raises(AddressRefused, match=r"127\.0\.0\.1 is a private or local network address"):
        await fetch_url(url, cache=cache, max_bytes=10 * MB, policy=AddressPolicy())
    assert server.requests == []


async def test_redirect_from_a_public_site_to_loopback_is_refused(
    media_dir, server, public_site, cache
):
    server.files["/private.mp4"] = Served(body=(media_dir / "a.mp4").read_bytes(),
                                          content_type="video/mp4")  # fmt: skip
    public_site.files["/clip.mp4"] = Served(body=b"", location=f"{server.url}/private.mp4")
    url = f"{public_site.url}/clip.mp4"

    with pytest.raises(AddressRefused) as refused:
        await fetch_url(url, cache=cache, max_bytes=10 * MB, policy=PUBLIC_STAND_IN)

    assert str(refused.value).startswith(
        f"{url}: it leads to 127.0.0.1, which is a private or local network address"
    )
    assert public_site.gets("/clip.mp4")  # the allowed site was asked, and answered 302
    assert server.requests == []  # the redirect was never followed
    assert cache.entries() == []


async def test_allowed_network_lets_a_lan_source_through(media_dir, server, cache):
    body = (media_dir / "a.mp4").read_bytes()
    server.files["/nas/clip.mp4"] = Served(body=body, content_type="video/mp4")
    path = await fetch_url(f"{server.url}/nas/clip.mp4", cache=cache, max_bytes=10 * MB,
                           policy=AddressPolicy.allowing("127.0.0.0/8"))  # fmt: skip
    assert path.read_bytes() == body


async def test_refusal_tells_nothing_of_the_internal_answer_or_address(server, cache):
    # A name, so the message could only learn 127.0.0.1 by resolving it.
    server.files["/admin"] = Served(body=ROUTER_PAGE, content_type="text/html", status=401)
    url = f"http://localhost:{server.port}/admin"
    with pytest.raises(AddressRefused) as refused:
        await fetch_url(url, cache=cache, max_bytes=10 * MB, policy=AddressPolicy())
    message = str(refused.value)
    assert message.startswith(f"{url}: ")
    # the URL is the submitter's own text (its random port may hold "401")
    message = message.removeprefix(f"{url}: ")
    assert "localhost resolves to a private or local network address" in message
    for leak in ("127.0.0.1", "::1", "SECRET", "Router", "401", "refused by"):
        assert leak not in message
    assert server.requests == []


def test_a_name_is_resolved_once_per_connection_and_connected_to_as_checked(server, public_site):
    server.files["/clip.mp4"] = Served(body=b"the owner's private file")
    public_site.files["/clip.mp4"] = Served(body=b"public bytes")
    answers = iter([["127.0.0.2"], ["127.0.0.1"]])  # a rebinding name: public, then local
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return next(answers)

    with GuardedProxy(PUBLIC_STAND_IN, resolve=rebinding) as proxy:
        with httpx.Client(proxy=proxy.url, timeout=10) as client:
            first = client.get(f"http://media.example:{server.port}/clip.mp4")
            second = client.get(f"http://media.example:{server.port}/clip.mp4")

    assert first.status_code == 200 and first.content == b"public bytes"
    assert second.status_code == 403  # the second answer was checked too, and refused
    assert asked == ["media.example", "media.example"]
    assert server.requests == []
    assert [r.host for r in proxy.refusals] == ["media.example"]


def test_https_tunnels_are_checked_like_plain_requests(server, public_site):
    public_site.files["/ok"] = Served(body=b"tunnelled")
    with GuardedProxy(PUBLIC_STAND_IN) as proxy:
        refused = _raw(proxy, f"CONNECT 127.0.0.1:{server.port} HTTP/1.1\r\n")
        allowed = _raw(proxy, f"CONNECT 127.0.0.2:{public_site.port} HTTP/1.1\r\n",
                       then=b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # fmt: skip
    assert refused.startswith(b"HTTP/1.1 403")
    assert allowed.startswith(b"HTTP/1.1 200 Connection established") and b"tunnelled" in allowed
    assert server.requests == []


def test_the_proxy_serves_only_the_download_it_was_made_for(public_site):
    public_site.files["/ok"] = Served(body=b"fine")
    with GuardedProxy(PUBLIC_STAND_IN) as proxy:
        stranger = _raw(proxy, f"GET {public_site.url}/ok HTTP/1.1\r\n", auth=False)
    assert stranger.startswith(b"HTTP/1.1 407")
    assert public_site.requests == []


def _raw(proxy: GuardedProxy, request_line: str, *, then: bytes = b"", auth: bool = True) -> bytes:
    """Send one request head to the proxy over a plain socket; everything it answers."""
    address = httpx.URL(proxy.url)
    credentials = base64.b64encode(f"{address.username}:{address.password}".encode()).decode()
    head = request_line + (f"Proxy-Authorization: Basic {credentials}\r\n" if auth else "") + "\r\n"
    with socket.create_connection((address.host, address.port), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = sock.recv(65536)
        if then and answer.startswith(b"HTTP/1.1 200"):
            sock.sendall(then)
            while chunk := sock.recv(65536):
                answer += chunk
    return answer
