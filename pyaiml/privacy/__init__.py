"""Privacy: encrypted model files (AES-256-GCM through the ``cryptography`` package),
de-identification of text corpora, and differentially private training (DP-SGD with a
dp-accounting privacy accountant). See pyaiml/privacy/crypto.py, pyaiml/privacy/deid.py and
pyaiml/privacy/dp.py."""
from pyaiml.privacy.crypto import (DecryptionError, KeyFile, decrypt_file, encrypt_file, generate_key_file, key_id,
                                   rekey_file)
from pyaiml.privacy.deid import deidentify
from pyaiml.privacy.dp import (DPSGD, DPKerasAdamOptimizer, DPKerasRMSpropOptimizer, DPKerasSGDOptimizer,
                               compute_epsilon, compute_noise_multiplier)

__all__ = ["DecryptionError", "KeyFile", "decrypt_file", "encrypt_file", "generate_key_file", "key_id", "rekey_file",
           "deidentify", "DPSGD", "DPKerasSGDOptimizer", "DPKerasAdamOptimizer", "DPKerasRMSpropOptimizer",
           "compute_epsilon", "compute_noise_multiplier"]
