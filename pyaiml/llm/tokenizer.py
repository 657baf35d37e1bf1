"""The tokenizer of a checkpoint folder: ``tokenizer.json`` through the ``tokenizers``
package, special tokens and the chat template from ``tokenizer_config.json`` (or
``chat_template.jinja``), and incremental decoding for streaming.

- :class:`Tokenizer`: ``encode(text, add_special_tokens=True) -> list[int]``,
  ``decode(ids, skip_special_tokens=True) -> str``, ``bos_token_id``, ``eos_token_ids``,
  ``pad_token_id``, ``apply_chat_template(messages, add_generation_prompt=True) -> str``
  (rendered with jinja2 in a sandbox, the variables Hugging Face templates expect:
  ``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``,
  ``raise_exception``; ValueError when jinja2 is not installed or the folder has no
  template).
- :class:`TextStream`: turns a growing list of generated ids into the text pieces to show,
  holding back an incomplete UTF-8 character (byte-level BPE splits them) and any tail
  that could still become a stop string.

Not here: training tokenizers (the tests build theirs with the ``tokenizers`` library).
Tests: tests/test_llm_tokenizer.py (against transformers' fast tokenizer and its
``apply_chat_template``).
"""
from __future__ import annotations

import json
import os


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError("pyaiml.llm reads tokenizer.json with the 'tokenizers' package: pip install "
                          "'pyaiml[llm]' (or pip install tokenizers)") from None
    return tokenizers


def _token_str(v):
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None


class Tokenizer:
    """tokenizer.json (+ tokenizer_config.json, special_tokens_map.json) of a folder."""

    def __init__(self, path, eos_token_id=None, bos_token_id=None, pad_token_id=None):
        p = os.fspath(path)
        fname = os.path.join(p, "tokenizer.json")
        if not os.path.isfile(fname):
            found = sorted(n for n in os.listdir(p) if "tok" in n or n.endswith((".model", ".txt")))
            raise ValueError(f"{p}: no tokenizer.json (pyaiml.llm reads only the 'tokenizers' JSON format). "
                             f"Tokenizer-like files found: {found or 'none'}; pass token ids instead of text")
        tk = _tokenizers()
        try:
            self._tok = tk.Tokenizer.from_file(fname)
        except Exception as e:  # noqa: BLE001 (the Rust library raises a bare Exception)
            raise ValueError(f"{fname}: not a readable tokenizers file ({e})") from None
        self.path = p
        cfg = {}
        for extra in ("special_tokens_map.json", "tokenizer_config.json"):
            f = os.path.join(p, extra)
            if os.path.isfile(f):
                try:
                    with open(f, encoding="utf-8") as fh:
                        d = json.load(fh)
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise ValueError(f"{f}: not a readable JSON file ({e})") from None
                if isinstance(d, dict):
                    cfg.update(d)
        self.config = cfg
        self.bos_token = _token_str(cfg.get("bos_token"))
        self.eos_token = _token_str(cfg.get("eos_token"))
        self.pad_token = _token_str(cfg.get("pad_token"))
        self.bos_token_id = self._id(self.bos_token) if bos_token_id is None else bos_token_id
        eos = self._id(self.eos_token) if eos_token_id is None else eos_token_id
        self.eos_token_ids = [] if eos is None else ([int(e) for e in eos] if isinstance(eos, (list, tuple))
                                                     else [int(eos)])
        if self.eos_token is None and self.eos_token_ids:
            self.eos_token = self._tok.id_to_token(self.eos_token_ids[0])
        if self.bos_token is None and self.bos_token_id is not None:
            self.bos_token = self._tok.id_to_token(int(self.bos_token_id))
        self.pad_token_id = self._id(self.pad_token) if pad_token_id is None else pad_token_id
        self.chat_template = self._find_template(p, cfg.get("chat_template"))

    def _id(self, token):
        return None if token is None else self._tok.token_to_id(token)

    @staticmethod
    def _find_template(p, t):
        jfile = os.path.join(p, "chat_template.jinja")
        if os.path.isfile(jfile):
            with open(jfile, encoding="utf-8") as f:
                return f.read()
        if isinstance(t, list):  # [{"name": "default", "template": ...}, ...]
            named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
            t = named.get("default") or next(iter(named.values()), None)
        return t if isinstance(t, str) else None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list:
        if not isinstance(text, str):
            raise TypeError(f"encode: text must be a str. Received {type(text).__name__}")
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str):
        return self._tok.token_to_id(token)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, **variables) -> str:
        """The chat prompt of ``messages`` ([{"role": ..., "content": ...}, ...]) as text.

        Encode the result with ``add_special_tokens=False``: templates write their own BOS.
        """
        if self.chat_template is None:
            raise ValueError(f"{self.path}: no chat template (tokenizer_config.json 'chat_template' or "
                             "chat_template.jinja); pass a plain prompt instead")
        if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise TypeError("apply_chat_template: messages must be a list of {'role': ..., 'content': ...} dicts. "
                            f"Received {messages!r:.200}")
        try:
            from jinja2.exceptions import TemplateError
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:
            raise ValueError("chat templates are rendered with jinja2: pip install 'pyaiml[llm]' (or pip install "
                             "jinja2)") from None

        def raise_exception(msg):
            raise TemplateError(msg)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(x, indent=indent,
                                                                                     ensure_ascii=ensure_ascii)
        env.globals["raise_exception"] = raise_exception
        try:
            tmpl = env.from_string(self.chat_template)
            return tmpl.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                               bos_token=self.bos_token or "", eos_token=self.eos_token or "", **variables)
        except TemplateError as e:
            raise ValueError(f"chat template of {self.path}: {e}") from None


class TextStream:
    """Text pieces of a growing list of generated ids, safe to show as they come.

    ``push(ids)`` takes the whole list generated so far and returns the new piece (maybe
    ""), holding back text that ends in an incomplete character (U+FFFD from a partial
    UTF-8 sequence) or that could be the start of a stop string. ``text`` is everything
    decoded; ``stop_at`` is the index of the first stop string in it, or None.
    """

    def __init__(self, tokenizer: Tokenizer, stop=()):
        self.tok = tokenizer
        self.stop = tuple(stop)
        self.text = ""
        self.shown = 0
        self.stop_at = None

    def push(self, ids, final: bool = False) -> str:
        self.text = self.tok.decode(ids)
        if self.stop:
            hits = [i for i in (self.text.find(s, max(0, self.shown - len(s))) for s in self.stop) if i >= 0]
            if hits:
                self.stop_at = min(hits)
        end = len(self.text) if self.stop_at is None else self.stop_at
        if self.stop_at is None and not final:
            while end > self.shown and self.text[end - 1] == "\ufffd":
                end -= 1
            hold = 0  # the longest tail that is a proper prefix of a stop string
            for s in self.stop:
                for n in range(min(len(s) - 1, end - self.shown), hold, -1):
                    if self.text[end - n:end] == s[:n]:
                        hold = n
                        break
            end -= hold
        piece = self.text[self.shown:end] if end > self.shown else ""
        self.shown = max(self.shown, end)
        return piece

    @property
    def final_text(self) -> str:
        return self.text if self.stop_at is None else self.text[:self.stop_at]
