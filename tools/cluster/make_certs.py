#!/usr/bin/env python3
"""Certificates for a cluster that speaks mutual TLS (stn-scheduler / stn-executor --tls-*).

    python tools/cluster/make_certs.py OUT_DIR [--host NAME_OR_IP ...] [--days N]

writes, in OUT_DIR (created; existing files are not overwritten):

  ca.pem, ca-key.pem          the cluster's CA (keep ca-key.pem offline)
  node.pem, node-key.pem      for the scheduler and the executors (server and client use),
                              valid for every --host (default: 127.0.0.1 and localhost)
  client.pem, client-key.pem  for a client (stn rectify/sql --cluster, a Flight SQL client)

Every process gets --tls-ca ca.pem and its own certificate and key. Keys are ECDSA P-256,
written with mode 0600. Uses the `cryptography` package (pip install cryptography).
"""
import argparse
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path, data, private=False):
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(cn, days):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(ca, ca_key, cn, hosts, usages, days):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--host", action="append", help="a name or IP address of the cluster's machines")
    p.add_argument("--days", type=int, default=365)
    a = p.parse_args(argv)
    hosts = a.host or ["127.0.0.1", "localhost"]
    os.makedirs(a.out_dir, exist_ok=True)
    names = ["ca.pem", "ca-key.pem", "node.pem", "node-key.pem", "client.pem", "client-key.pem"]
    taken = [n for n in names if os.path.exists(os.path.join(a.out_dir, n))]
    if taken:
        sys.exit(f"make_certs: {a.out_dir} already holds {', '.join(taken)}: nothing written")
    ca, ca_key = make_ca("stn cluster CA", a.days)
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    node, node_key = make_leaf(ca, ca_key, "stn cluster node", hosts, both, a.days)
    client, client_key = make_leaf(ca, ca_key, "stn client", [], [ExtendedKeyUsageOID.CLIENT_AUTH], a.days)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)
    out = lambda n: os.path.join(a.out_dir, n)
    _write(out("ca.pem"), pem(ca))
    _write(out("ca-key.pem"), _key_pem(ca_key), private=True)
    _write(out("node.pem"), pem(node))
    _write(out("node-key.pem"), _key_pem(node_key), private=True)
    _write(out("client.pem"), pem(client))
    _write(out("client-key.pem"), _key_pem(client_key), private=True)
    print(f"make_certs: wrote {', '.join(names)} in {a.out_dir} (hosts: {', '.join(hosts)})")


if __name__ == "__main__":
    main(sys.argv[1:])
