"""boto3's start_session returns a StreamUrl and TokenValue the stock plugin can use: the URL
upgrades to a WebSocket (TLS with the broker's CA), the token opens the data channel, and
the broker then speaks the Session Manager dialect (its handshake request comes first).

The WebSocket client is a few lines of the standard library, so nothing beyond the pinned
requirements is needed.
"""

import base64
import json
import os
import socket
import ssl
import struct
import uuid
from urllib.parse import urlsplit

HEADER_LEN = 120


def ws_connect(url: str, ca_file: str) -> ssl.SSLSocket:
    parts = urlsplit(url)
    assert parts.scheme == "wss", url
    ctx = ssl.create_default_context(cafile=ca_file)
    raw = socket.create_connection((parts.hostname, parts.port), timeout=20)
    sock = ctx.wrap_socket(raw, server_hostname=parts.hostname)
    key = base64.b64encode(os.urandom(16)).decode()
    path = parts.path + ("?" + parts.query if parts.query else "")
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "connection closed during the upgrade"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def send_frame(sock: ssl.SSLSocket, opcode: int, payload: bytes) -> None:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def recv_exact(sock: ssl.SSLSocket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "connection closed"
        out += chunk
    return out


def recv_frame(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    b0, b1 = recv_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", recv_exact(sock, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", recv_exact(sock, 8))
    return b0 & 0x0F, recv_exact(sock, n)


def open_data_channel(token: str) -> bytes:
    return json.dumps(
        {
            "MessageSchemaVersion": "1.0",
            "RequestId": str(uuid.uuid4()),
            "TokenValue": token,
            "ClientId": str(uuid.uuid4()),
            "ClientVersion": "1.2.764.0",
        }
    ).encode()


def test_start_session_returns_a_usable_stream_url_and_token(broker, admin, agent):
    resp = admin.start_session(Target=agent.instance_id)
    sid, url, token = resp["SessionId"], resp["StreamUrl"], resp["TokenValue"]
    assert url.endswith(f"/v1/data-channel/{sid}?role=publish_subscribe"), url
    assert urlsplit(url).netloc == urlsplit(broker.url).netloc
    assert 0 < len(token) <= 300

    sock = ws_connect(url, str(broker.ca_file))
    try:
        send_frame(sock, 0x1, open_data_channel(token))
        opcode, frame = recv_frame(sock)
        assert opcode == 0x2, (opcode, frame)
        assert len(frame) >= HEADER_LEN
        (header_len,) = struct.unpack("!I", frame[:4])
        assert header_len == 116
        message_type = frame[4:36].decode().strip()
        (payload_type,) = struct.unpack("!I", frame[112:116])
        assert message_type == "output_stream_data"
        assert payload_type == 5, "the handshake request comes first"
        request = json.loads(frame[HEADER_LEN:])
        assert request["RequestedClientActions"][0]["ActionParameters"]["SessionType"] == "Standard_Stream"
    finally:
        sock.close()

    # The token was single use: a second OpenDataChannel with it is refused with a reason.
    sock = ws_connect(url, str(broker.ca_file))
    try:
        send_frame(sock, 0x1, open_data_channel(token))
        opcode, frame = recv_frame(sock)
        assert opcode == 0x8, (opcode, frame)
        assert b"already used" in frame[2:], frame
    finally:
        sock.close()
    admin.terminate_session(SessionId=sid)
