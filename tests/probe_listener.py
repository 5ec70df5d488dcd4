"""A TCP listener for firewall tests (run inside a test's network namespace, or as another
user): on ADDRESS (every address of its namespace, both families, by default) at PORT (0:
any), it prints ``listening <port>``; it answers each connection with TOKEN, prints
``accepted <local address> <peer>``, and then echoes what it is sent until the other end
closes; ``later SECONDS`` it answers ``late`` after that long instead. Usage:
probe_listener.py TOKEN PORT [ADDRESS]."""

import socket
import sys
import threading
import time


def serve(conn: socket.socket, token: str) -> None:
    with conn:
        try:
            conn.sendall(f"{token}\n".encode())
            while data := conn.recv(4096):
                if data.startswith(b"later "):
                    time.sleep(float(data.split()[1]))
                    data = b"late\n"
                conn.sendall(data)
        except OSError:
            pass


def main() -> None:
    token, port = sys.argv[1], int(sys.argv[2])
    address = sys.argv[3] if len(sys.argv) > 3 else "::"
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address, port))
    sock.listen(16)
    print("listening", sock.getsockname()[1], flush=True)
    while True:
        conn, peer = sock.accept()
        print("accepted", conn.getsockname()[0], peer[0], flush=True)
        threading.Thread(target=serve, args=(conn, token), daemon=True).start()


if __name__ == "__main__":
    main()
