#!/usr/bin/env python3
"""Certificates made at test time with the `openssl` command: a CA, server
certificates (RSA or ECDSA, any DNS/IP names, valid or expired), client
certificates, an encrypted key. Everything lands in one directory per
call of make_pki(); nothing is shared between test runs."""
import os
import subprocess
import tempfile

__all__ = ["Pki", "make_pki"]


def _run(args, cwd):
    p = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args[1:3]),
                                                        p.stderr.decode("utf-8", "replace")))
    return p.stdout


def _newkey(kind):
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]


class Pki:
    """A CA and the certificates it signed, as files in self.dir."""

    def __init__(self, directory, name="Ferry Test CA"):
        self.dir = directory
        self.ca_cert = self.path("ca.pem")
        self.ca_key = self.path("ca.key")
        _run(["openssl", "req", "-x509", "-nodes"] + _newkey("ec") +
             ["-keyout", self.ca_key, "-out", self.ca_cert, "-days", "30", "-subj", "/CN=" + name,
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    def issue(self, stem, names=(), kind="ec", days=30, client=False, cn=None, ips=(), subj=None):
        """Signs a certificate for DNS names (and IPs); returns (cert, key)
        paths. days <= 0 makes one that has already expired. subj replaces
        the subject /CN=cn."""
        cert, key, csr, ext = (self.path(stem + s) for s in (".pem", ".key", ".csr", ".ext"))
        cn = cn or (names[0] if names else stem)
        _run(["openssl", "req", "-nodes"] + _newkey(kind) +
             ["-keyout", key, "-out", csr, "-subj", subj or "/CN=" + cn], self.dir)
        sans = ["DNS:" + n for n in names] + ["IP:" + i for i in ips]
        with open(ext, "w") as fh:
            if sans:
                fh.write("subjectAltName=%s\n" % ",".join(sans))
            fh.write("basicConstraints=CA:FALSE\n")
            fh.write("extendedKeyUsage=%s\n" % ("clientAuth" if client else "serverAuth"))
        _run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
              "-CAcreateserial", "-days", str(days if days > 0 else -1), "-extfile", ext,
              "-out", cert], self.dir)
        os.chmod(key, 0o600)
        return cert, key

    def encrypted_key(self, stem):
        """An RSA key protected by a passphrase, and a certificate for it."""
        cert, key = self.issue(stem, ["enc.test"], kind="rsa")
        enc = self.path(stem + "-enc.key")
        _run(["openssl", "pkey", "-in", key, "-out", enc, "-aes256", "-passout", "pass:secret"],
             self.dir)
        os.chmod(enc, 0o600)
        return cert, enc

    def ocsp_response(self, cert, stem):
        """A DER OCSP response ("good") for cert, signed by the CA."""
        serial = _run(["openssl", "x509", "-in", cert, "-noout", "-serial"], self.dir)
        serial = serial.decode().strip().split("=", 1)[1]
        index = self.path(stem + ".index")
        with open(index, "w") as fh:
            fh.write("V\t301231235959Z\t\t%s\tunknown\t/CN=%s\n" % (serial, stem))
        req, resp = self.path(stem + ".ocspreq"), self.path(stem + ".ocsp")
        _run(["openssl", "ocsp", "-issuer", self.ca_cert, "-cert", cert, "-reqout", req,
              "-no_nonce"], self.dir)
        _run(["openssl", "ocsp", "-index", index, "-rsigner", self.ca_cert, "-rkey", self.ca_key,
              "-CA", self.ca_cert, "-reqin", req, "-respout", resp, "-ndays", "1"], self.dir)
        return resp

    def fingerprint(self, cert):
        out = _run(["openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256"], self.dir)
        return out.decode().strip().split("=", 1)[1].replace(":", "").lower()


def make_pki(base=None, name="Ferry Test CA"):
    d = tempfile.mkdtemp(prefix="pki-", dir=base)
    return Pki(d, name)
