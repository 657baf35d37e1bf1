"""Privacy: encrypted model files (AES-256-GCM through the ``cryptography`` package) and
de-identification of text corpora. See pyaiml/privacy/crypto.py and pyaiml/privacy/deid.py."""
from pyaiml.privacy.crypto import (DecryptionError, KeyFile, decrypt_file, encrypt_file, generate_key_file, key_id,
                                   rekey_file)
from pyaiml.privacy.deid import deidentify

__all__ = ["DecryptionError", "KeyFile", "decrypt_file", "encrypt_file", "generate_key_file", "key_id", "rekey_file",
           "deidentify"]
