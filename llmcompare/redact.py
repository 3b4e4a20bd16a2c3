"""Secrets out of everything llmcompare shows or keeps: URLs, messages, option mappings.

A user can put a credential in an option (``-o url=http://user:KEY@host/v1``, a key inside
``-o extra_body``), and a server can echo what it was sent (its error body quoting the
``Authorization`` header, the URL or the request body). The adapters still *use* such credentials
(the URL's userinfo becomes HTTP Basic auth, ``extra_body`` is sent as given) but pass everything
they put in ``engine_version()``, error messages, logs and records through this module:

* :func:`redact_url`: userinfo becomes ``***`` (``http://***@host/v1``), and so does the value of a
  query parameter whose name looks secret (``?api_key=...``);
* :func:`redact_text`: every known secret (and its URL-quoted and Basic-auth forms) becomes ``***``,
  and so do ``Bearer``/``Basic`` credentials, URL userinfo and quoted values of secret-looking keys
  anywhere in the text;
* :func:`redact_mapping`: a copy of a JSON-like value with secret-looking keys' string values
  ``***`` and every URL redacted (options, ``extra_body``, versions); :func:`secret_values` collects
  those values for :func:`redact_text`.

A key "looks secret" when its last word (split at ``_``, ``-``, ``.`` and case changes) is one of
:data:`SECRET_WORDS`, or it contains ``apikey``, ``password``, ``secret`` or ``authorization`` once
separators are removed: ``api_key``, ``Authorization``, ``hf_token``, ``x-api-key``, ``password``,
``client_secret``, ``key``; but not ``max_tokens`` or ``token_ids``. Nothing here raises on odd
input: it is used on the way out of error paths.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MASK = "***"

SECRET_WORDS = frozenset({"token", "key", "apikey", "secret", "password", "passwd", "pwd", "authorization", "auth",
                          "credential", "credentials", "cookie", "signature"})
_SECRET_INSIDE = ("apikey", "password", "secret", "authorization", "accesstoken", "authtoken", "bearer")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_MIN_SECRET = 3
"""Shorter strings are not redacted by value (they would mangle every message); by key they are."""


def is_secret_key(name: Any) -> bool:
    """Whether a mapping key or query parameter names a secret (see the module docstring)."""
    if not isinstance(name, str) or not name:
        return False
    flat = re.sub(r"[^a-z0-9]", "", name.lower())
    if any(word in flat for word in _SECRET_INSIDE):
        return True
    words = _WORDS.findall(name)
    return bool(words) and words[-1].lower() in SECRET_WORDS


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its userinfo, and the user and password it held (URL-unquoted; None when absent)."""
    try:
        parts = urlsplit(url)
        if "@" not in parts.netloc:
            return url, None, None
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, sep, password = userinfo.partition(":")
        clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
        return clean, unquote(user) if user else None, unquote(password) if sep else None
    except ValueError:
        return _USERINFO.sub(r"\1", url), None, None


_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"<>]*@")


def redact_url(url: Any) -> str:
    """``url`` with its userinfo replaced by ``***`` and the values of secret-looking query
    parameters too. Never raises; a value that is not a string is returned as its ``str``."""
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return _USERINFO.sub(rf"\1{MASK}@", text)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = []
        for pair in query.split("&"):
            name, sep, value = pair.partition("=")
            pairs.append(f"{name}={MASK}" if sep and value and is_secret_key(unquote(name)) else pair)
        query = "&".join(pairs)
    if netloc == parts.netloc and query == parts.query:
        return text
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_BEARER = re.compile(r"\b(Bearer|Basic|Token|Digest)(\s+)[A-Za-z0-9._~+/=:-]{3,}", re.IGNORECASE)
_KEYED = re.compile(
    r"""(?P<key>["']?[A-Za-z0-9_.-]*(?:api[_-]?key|apikey|token|password|passwd|secret|authorization|auth)["']?)"""
    r"""(?P<sep>\s*[:=]\s*)(?P<q>["'])(?P<value>(?:(?!(?P=q)).){1,4096})(?P=q)""",
    re.IGNORECASE)
_HEADER = re.compile(r"(?P<key>\b(?:x-)?api[_-]?key|\bauthorization)(?P<sep>\s*[:=]\s*)(?P<value>[^\s,;'\"}]{3,})",
                     re.IGNORECASE)


def _keyed(match: re.Match) -> str:
    key = match.group("key").strip("\"'")
    if not is_secret_key(key):
        return match.group(0)
    return f"{match.group('key')}{match.group('sep')}{match.group('q')}{MASK}{match.group('q')}"


def secret_forms(secret: str) -> list[str]:
    """The ways a secret shows up in text: itself, URL-quoted, and (for ``user:password``) Base64."""
    forms = [secret, quote(secret, safe=""), quote(secret)]
    try:
        forms.append(base64.b64encode(secret.encode("utf-8", "surrogatepass")).decode("ascii"))
    except Exception:
        pass
    return [f for f in dict.fromkeys(forms) if len(f) >= _MIN_SECRET]


def redact_text(text: Any, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every secret in ``secrets`` (and its quoted and Base64 forms), every
    ``Bearer``/``Basic`` credential, URL userinfo and quoted value of a secret-looking key replaced
    by ``***``. Never raises."""
    try:
        out = text if isinstance(text, str) else str(text)
        forms = sorted({f for s in secrets if isinstance(s, str) and s for f in secret_forms(s)}, key=len, reverse=True)
        for form in forms:
            out = out.replace(form, MASK)
        out = _USERINFO.sub(rf"\1{MASK}@", out)
        out = _BEARER.sub(rf"\1\2{MASK}", out)
        out = _KEYED.sub(_keyed, out)
        return _HEADER.sub(lambda m: f"{m.group('key')}{m.group('sep')}{MASK}", out)
    except Exception:  # a redactor that fails must not show the text it could not clean
        return "<text withheld: it could not be redacted>"


def redact_mapping(value: Any, _depth: int = 0) -> Any:
    """A copy of a JSON-like value (mappings, lists, scalars) with the string values of
    secret-looking keys replaced by ``***`` and every string that is a URL passed through
    :func:`redact_url`. Strings that are JSON objects (``extra_body``) are redacted inside."""
    if _depth > 50:
        return MASK
    if isinstance(value, Mapping):
        return {k: (MASK if is_secret_key(k) and isinstance(v, str) and v else redact_mapping(v, _depth + 1))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_mapping(v, _depth + 1) for v in value]
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("{") and stripped.endswith("}"):
            import json

            try:
                inner = json.loads(stripped)
            except (ValueError, RecursionError):
                inner = None
            if isinstance(inner, dict):
                return json.dumps(redact_mapping(inner, _depth + 1))
        if "://" in value:
            return redact_url(value) if "://" in value[:16] else _USERINFO.sub(rf"\1{MASK}@", value)
        return value
    return value


def secret_values(value: Any, _depth: int = 0) -> list[str]:
    """Every string under a secret-looking key in a JSON-like value (JSON-object strings included),
    and every password in a URL in it: what :func:`redact_text` must hide."""
    out: list[str] = []
    if _depth > 50:
        return out
    if isinstance(value, Mapping):
        for k, v in value.items():
            if is_secret_key(k) and isinstance(v, str) and v:
                out.append(v)
            else:
                out += secret_values(v, _depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            out += secret_values(v, _depth + 1)
    elif isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("{") and stripped.endswith("}"):
            import json

            try:
                out += secret_values(json.loads(stripped), _depth + 1)
            except (ValueError, RecursionError):
                pass
        if "@" in value and "://" in value:
            _, user, password = split_credentials(value.strip())
            if password:
                out.append(password)
                if user:
                    out.append(f"{user}:{password}")
    return out
