"""Redis servers of a test's own, beside the machine's: one over TLS with a CA the test made, and a
master, a replica and three sentinels. Debian's redis-server (built with TLS), all child processes
on free loopback ports, nothing kept on disk. A sentinel is the same binary with --sentinel: no
redis-sentinel package needed. Whatever happens, every server started is stopped: a constructor that
fails stops what it had started, and the fixtures stop the rest in a finalizer."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.processes import running, stopped, wait_for
from tests.support import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
MASTER = "cfs-test"


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, and a certificate it signs for localhost and 127.0.0.1 (the server's and a client's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def write_key(key, name: str) -> Path:
        path = directory / name
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return path

    def write_cert(cert, name: str) -> Path:
        path = directory / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def builder(subject: str, issuer: str, key):
        return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1)))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (builder("cfs test CA", "cfs test CA", ca_key)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (builder("localhost", "cfs test CA", key)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return {"ca": write_cert(ca, "ca.crt"), "cert": write_cert(cert, "server.crt"), "key": write_key(key, "server.key")}


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Servers:
    """Child processes, torn down together. Subclasses start theirs in `_start`: if that fails
    halfway, the servers it had started are stopped before the error goes on."""

    def __init__(self, work: Path, *args, **kwargs):
        self.work, self.processes = work, {}
        running(self)
        try:
            self._start(*args, **kwargs)
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *_) -> None:
        self.stop()

    def start(self, name: str, command: list[str], port: int) -> None:
        log = open(self.work / f"{name}.log", "wb")
        try:
            self.processes[name] = subprocess.Popen(command, cwd=self.work, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        wait_for(lambda: self.processes[name].poll() is None and _listening(port), 10, 0.05, f"{name} to listen")

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            process.kill()  # SIGKILL, as a crash: every connection cut at once
        process.wait(10)

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for name in self.processes:
            self.kill(name)
        stopped(self)


def _redis(port_args: list[str], work: Path, *extra: str) -> list[str]:
    return [REDIS_SERVER, *port_args, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(work),
            *extra]


def _sentinel(config: Path) -> list[str]:
    return [REDIS_SERVER, str(config), "--sentinel"]


def _tls_args(certs: dict[str, Path]) -> list[str]:
    return ["--tls-cert-file", str(certs["cert"]), "--tls-key-file", str(certs["key"]),
            "--tls-ca-cert-file", str(certs["ca"]), "--tls-auth-clients", "no"]


class TlsRedis(Servers):
    """A Redis that speaks only TLS, with a certificate of a CA no trust store knows; and, on asking,
    a sentinel over TLS watching it."""

    def _start(self) -> None:
        work = self.work
        self.certs = make_certificates(work)
        self.port = free_port()
        # Also on 127.0.0.2, an address the certificate does not name.
        self.start("redis-tls", _redis(["--port", "0", "--tls-port", str(self.port)], work, *_tls_args(self.certs),
                                       "--bind", "127.0.0.1", "127.0.0.2"), self.port)

    def url(self, host: str = "localhost") -> str:
        return f"rediss://{host}:{self.port}/0"

    def start_sentinel(self) -> int:
        port = free_port()
        config = self.work / "sentinel-tls.conf"
        tls = " ".join(_tls_args(self.certs)).replace("--", "\n").strip()
        config.write_text(f"port 0\ntls-port {port}\nbind 127.0.0.1\ndir {self.work}\n{tls}\ntls-replication yes\n"
                          f"sentinel monitor {MASTER} 127.0.0.1 {self.port} 1\n")
        self.start("sentinel-tls", _sentinel(config), port)
        return port


class SentinelRedis(Servers):
    """A master, its replica and three sentinels (quorum 2) that fail over within a few seconds of the
    master's death. Asynchronous replication: a failover may lose the master's last writes.

    With `redis_password`, Redis asks for it (the replica and the sentinels give it to the master);
    with `sentinel_password`, the sentinels ask for theirs (requirepass; they use it with each other
    too). Two different passwords, as a deployment that keeps them apart has."""

    SENTINELS = 3

    def __init__(self, work: Path, redis_password: str | None = None, sentinel_password: str | None = None):
        super().__init__(work, redis_password, sentinel_password)

    def _start(self, redis_password: str | None, sentinel_password: str | None) -> None:
        work = self.work
        self.redis_password, self.sentinel_password = redis_password, sentinel_password
        self.ports = {"redis-a": free_port(), "redis-b": free_port()}
        self.sentinel_ports = [free_port() for _ in range(self.SENTINELS)]
        master = self.ports["redis-a"]
        # masterauth on both: after a failover the old master is the new one's replica.
        auth = ["--requirepass", redis_password, "--masterauth", redis_password] if redis_password else []
        for name, port in self.ports.items():
            data = work / name
            data.mkdir()
            replica = [] if port == master else ["--replicaof", "127.0.0.1", str(master)]
            self.start(name, _redis(["--port", str(port)], data, *replica, *auth), port)
        for index, port in enumerate(self.sentinel_ports):
            config = work / f"sentinel-{index}.conf"  # each its own: a sentinel rewrites its configuration
            config.write_text(f"port {port}\nbind 127.0.0.1\ndir {work}\n"
                              f"sentinel monitor {MASTER} 127.0.0.1 {master} 2\n"
                              f"sentinel down-after-milliseconds {MASTER} 1000\n"
                              f"sentinel failover-timeout {MASTER} 3000\n"
                              + (f"sentinel auth-pass {MASTER} {redis_password}\n" if redis_password else "")
                              + (f"requirepass {sentinel_password}\n" if sentinel_password else ""))
            self.start(f"sentinel-{index}", _sentinel(config), port)
        wait_for(self.ready, 20, 0.2, "the sentinels to know the replica and each other")

    def url(self, db: int = 0, sentinels: int = SENTINELS) -> str:
        """A sentinel:// REDIS_URL naming the first `sentinels` of them."""
        auth = f":{self.redis_password}@" if self.redis_password else ""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports[:sentinels])
        return f"sentinel://{auth}{hosts}/{db}"

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.sentinel_password, socket_timeout=1, decode_responses=True)

    def ready(self) -> bool:
        for port in self.sentinel_ports:
            with self._sentinel(port) as sentinel:
                if not sentinel.sentinel_slaves(MASTER) or len(sentinel.sentinel_sentinels(MASTER)) < self.SENTINELS - 1:
                    return False
        return True

    def master_port(self) -> int:
        with self._sentinel(self.sentinel_ports[0]) as sentinel:
            return int(sentinel.sentinel_get_master_addr_by_name(MASTER)[1])

    def master_name(self) -> str:
        port = self.master_port()
        return next(name for name, known in self.ports.items() if known == port)

    def kill_master(self) -> tuple[str, float]:
        """SIGKILL the master; (its name, when it died)."""
        name = self.master_name()
        self.kill(name)
        return name, time.monotonic()
