"""JWT signing keys: key files read and installed safely, and the secret wrapper."""
