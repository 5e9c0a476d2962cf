# Independent derivation of C2SP tlog-cosignature v1.0.1 vectors (Python
# 'cryptography' Ed25519 + hashlib), straight from the spec text.
import base64, hashlib, struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")  # RFC 8032 7.1 TEST 1
sk = Ed25519PrivateKey.from_private_bytes(seed)
pub = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
name = "witness.example/w1"
text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
out = []
kid = hashlib.sha256(name.encode() + b"\n\x04" + pub).digest()[:4]
out.append(("seed", seed.hex()))
out.append(("name", name))
out.append(("vkey", "%s+%s+%s" % (name, kid.hex(), base64.b64encode(b"\x04" + pub).decode())))
nkid = hashlib.sha256(name.encode() + b"\n\x01" + pub).digest()[:4]
out.append(("note_vkey", "%s+%s+%s" % (name, nkid.hex(), base64.b64encode(b"\x01" + pub).decode())))
out.append(("checkpoint", base64.b64encode(text.encode()).decode()))
for ts in (1679315147, 0, 2**63 - 1):
    msg = b"cosignature/v1\ntime %d\n" % ts + text.encode()
    sig = sk.sign(msg)
    line = "\u2014 %s %s" % (name, base64.b64encode(kid + struct.pack(">Q", ts) + sig).decode())
    out.append(("time", str(ts)))
    out.append(("line", line))
for k, v in out:
    print("%s: %s" % (k, v))
