"""X.509 keys and certificates made with ``cryptography``, with no files and no tasks.

Building the CA and the server certificate, serialising keys and certificates to
PEM, and reading what a certificate says (names, expiry, fingerprints). Where
they are kept on disk, and the tasks, are in ``tasks.pki``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tasks.errors import PkiError

CLOCK_SKEW = dt.timedelta(minutes=5)
# Every key usage, off.
_NO_USAGE = dict.fromkeys(
    (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ),
    False,
)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def key_usage(*on: str) -> x509.KeyUsage:
    """A KeyUsage extension with only the usages named in ``on`` (``"digital_signature"``)."""
    return x509.KeyUsage(**{**_NO_USAGE, **dict.fromkeys(on, True)})


def new_key(key_type: str) -> PrivateKey:
    """A fresh private key: ``ec-p256`` (default), ``rsa-2048`` or ``rsa-4096``."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type in ("rsa-2048", "rsa-4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise PkiError(f"unknown key type {key_type!r}; use ec-p256, rsa-2048 or rsa-4096")


def utc_now() -> dt.datetime:
    """The current time, in UTC."""
    return dt.datetime.now(dt.UTC)


def self_signed(key: PrivateKey, name: x509.Name, days: int) -> x509.CertificateBuilder:
    """A certificate builder for ``key``, issued by itself, valid ``days`` from now (less
    the clock skew allowed); the caller adds its extensions and signs."""
    now = utc_now()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
    )


def build_ca(
    key: PrivateKey,
    organization: str,
    domain: str,
    days: int,
    constraints: x509.NameConstraints | None = None,
) -> x509.Certificate:
    """A self-signed CA certificate that may sign server certificates only, and with
    ``constraints`` (critical) only for the names they permit."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} registry CA for {domain}"),
        ]
    )
    builder = (
        self_signed(key, name, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage("digital_signature", "key_cert_sign", "crl_sign"), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if constraints is not None:
        builder = builder.add_extension(constraints, critical=True)
    return builder.sign(key, hashes.SHA256())


ANY_ADDRESS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def name_constraints(domain: str, names: list[str], ips: list[str]) -> x509.NameConstraints:
    """What a registry's CA may sign for: its names (and the names under them) and its
    addresses, nothing else; no address at all when it has none (an address left out
    of the permitted list would otherwise be unconstrained)."""
    dns = [x509.DNSName(n) for n in dict.fromkeys([domain, *names])]
    nets = [x509.IPAddress(ipaddress.ip_network(ip)) for ip in ips]
    excluded = None if ips else [x509.IPAddress(net) for net in ANY_ADDRESS]
    return x509.NameConstraints(permitted_subtrees=dns + nets, excluded_subtrees=excluded)


def ca_constraints(ca: x509.Certificate) -> x509.NameConstraints | None:
    try:
        return ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None


def _within(name: x509.GeneralName, subtree: x509.GeneralName) -> bool:
    if isinstance(name, x509.DNSName) and isinstance(subtree, x509.DNSName):
        value, base = name.value.lower(), subtree.value.lower().lstrip(".")
        return value == base or value.endswith("." + base)
    if isinstance(name, x509.IPAddress) and isinstance(subtree, x509.IPAddress):
        return name.value in subtree.value
    return False


def permitted(constraints: x509.NameConstraints, name: x509.GeneralName) -> bool:
    """Whether RFC 5280's rules let a CA with ``constraints`` sign for ``name``: inside a
    permitted subtree of its kind (when there are any of that kind), and inside no
    excluded one."""
    allowed = [t for t in constraints.permitted_subtrees or [] if type(t) is type(name)]
    if allowed and not any(_within(name, t) for t in allowed):
        return False
    return not any(_within(name, t) for t in constraints.excluded_subtrees or [])


def subject_alt_names(domain: str, names: list[str], ips: list[str]) -> list[x509.GeneralName]:
    """The SANs for the server certificate: the domain first, then every extra name and IP."""
    out: list[x509.GeneralName] = [x509.DNSName(domain)]
    out += [x509.DNSName(n) for n in names if n != domain]
    out += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    return out


def build_server_cert(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    key: PrivateKey,
    sans: list[x509.GeneralName],
    days: int,
) -> x509.Certificate:
    """A TLS server certificate for ``sans``, signed by the CA."""
    first = sans[0].value
    now = utc_now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(first))]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage("digital_signature", *(["key_encipherment"] if is_rsa else [])),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def key_pem(key: PrivateKey, passphrase: str | None = None) -> bytes:
    """PKCS#8 PEM; encrypted with the best available scheme when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated hex, as openssl prints it."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def cert_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in ext]


def days_left(cert: x509.Certificate) -> int:
    return (cert.not_valid_after_utc - utc_now()).days


def constraint_lines(cert: x509.Certificate) -> list[str]:
    """What ``pki.show`` says of a CA's Name Constraints (nothing for a server certificate)."""
    if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
        return []
    constraints = ca_constraints(cert)
    if constraints is None:
        return [
            "  names:       any (no Name Constraints: clients trust it for every site; "
            "move to a constrained CA with 'invoke pki.rotate-ca')"
        ]
    only = ", ".join(str(t.value) for t in constraints.permitted_subtrees or [])
    never = ", ".join(str(t.value) for t in constraints.excluded_subtrees or [])
    return [f"  names:       only {only}" + (f"; never {never}" if never else "")]


def describe(label: str, cert: x509.Certificate, warn_days: int) -> list[str]:
    """Lines for ``pki.show``; the last one is a warning when expiry is near."""
    left = days_left(cert)
    lines = [
        f"{label}:",
        f"  subject:     {cert.subject.rfc4514_string()}",
        f"  issuer:      {cert.issuer.rfc4514_string()}",
        f"  SANs:        {', '.join(cert_sans(cert)) or '(none)'}",
        *constraint_lines(cert),
        f"  not after:   {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({left} days left)",
        f"  SHA-256:     {fingerprint(cert)}",
    ]
    if left < warn_days:
        lines.append(f"  WARNING: {label} expires in {left} days (under {warn_days})")
    return lines
