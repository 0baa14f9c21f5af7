"""PII handling before anything reaches a curated table: keyed hashes, truncated IPs, scrubbed JSON.

Hashes are HMAC-SHA256 keyed by `PLG_HASH_KEY`, so they join across tables (and erasure can find a
person by the hash of their id) but cannot be reversed by hashing guessed emails without the key.
Python's hmac is the cost, so every function hashes each distinct value once.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Iterable

import polars as pl

EMAIL_PATTERN = r"^[^@\s\"]+@[^@\s\"]+\.[^@\s\"]+$"
# An email inside free text ("cc ann@x.com"): hashed in place, the text around it kept.
EMAIL_IN_TEXT = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
_EMAIL_IN_TEXT = re.compile(EMAIL_IN_TEXT)


def _check_key(key: str) -> bytes:
    if not key:
        raise ValueError("the PII hash key is empty: set PLG_HASH_KEY")
    return key.encode()


def hmac_hex(values: pl.Series | pl.Expr, key: str) -> pl.Series | pl.Expr:
    """HMAC-SHA256 hex digest of each value (nulls stay null), computed once per distinct value."""
    if isinstance(values, pl.Expr):
        return values.map_batches(lambda s: hmac_hex(s, key), return_dtype=pl.String)
    raw_key = _check_key(key)
    values = values.cast(pl.String)
    distinct = values.drop_nulls().unique()
    digests = pl.Series(
        [hmac.digest(raw_key, v.encode(), "sha256").hex() for v in distinct.to_list()],
        dtype=pl.String,
    )
    return values.replace_strict(distinct, digests, default=None, return_dtype=pl.String)


def normalise_email(expr: pl.Expr) -> pl.Expr:
    """Emails compare case-insensitively and arrive with stray spaces; hash one canonical form."""
    return expr.str.strip_chars().str.to_lowercase()


def hash_emails(values: pl.Expr, key: str) -> pl.Expr:
    """HMAC of normalised emails, so the same person hashes the same in CRM, traits and invites."""
    return hmac_hex(normalise_email(values), key)


def mask_emails(values: pl.Expr, key: str) -> pl.Expr:
    """Hash only the values that are emails (for free-text fields such as invited_by)."""
    return (
        pl.when(values.str.contains(EMAIL_PATTERN)).then(hash_emails(values, key)).otherwise(values)
    )


def _ipv6_48(ips: pl.Series) -> pl.Series:
    distinct = ips.drop_nulls().unique().to_list()
    mapped = []
    for ip in distinct:
        try:
            net = ipaddress.IPv6Network(f"{ip}/48", strict=False)
            mapped.append(str(net))
        except ValueError:
            mapped.append(None)
    return ips.replace_strict(distinct, pl.Series(mapped, dtype=pl.String), default=None)


def truncate_ip(expr: pl.Expr) -> pl.Expr:
    """IPv4 -> its /24, IPv6 -> its /48; anything else is not an address we can keep: null."""
    v4 = expr.str.extract(r"^(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}$", 1)
    v6 = pl.when(expr.str.contains(":")).then(expr)
    return (
        pl.when(v4.is_not_null())
        .then(v4 + ".0/24")
        .otherwise(v6.map_batches(_ipv6_48, return_dtype=pl.String))
    )


# A JSON scalar as text: a string (escapes included), number, boolean or null.
_SCALAR = r'"(?:[^"\\]|\\.)*"|-?\d[\d.eE+-]*|true|false|null'


class JsonScrubber:
    """Rewrites JSON object text: email keys hashed, name-like keys dropped, at any depth.

    Also hashes any email found inside any string, whatever its key, since product teams put
    emails in properties we cannot list in advance. Scalars are rewritten with vectorised regex
    passes (one hash per distinct email); only a PII key holding an object or a list goes
    through a Python walk of the parsed JSON.
    """

    def __init__(self, key: str, email_keys: Iterable[str], drop_keys: Iterable[str]):
        self._key = _check_key(key)
        self._email_keys = {k.lower() for k in email_keys}
        self._drop_keys = {k.lower() for k in drop_keys}
        emails = "|".join(re.escape(k) for k in sorted(self._email_keys))
        drops = "|".join(re.escape(k) for k in sorted(self._drop_keys))
        pair = rf'"(?:{drops})"\s*:\s*(?:{_SCALAR})'
        # A pair followed by a comma, the last pair of an object, then a lone pair.
        self._drop_pairs = [rf"(?i){pair}\s*,\s*", rf"(?i)\s*,\s*{pair}", rf"(?i){pair}"]
        self._keyed_email = rf'(?i)"(?:{emails})"\s*:\s*"(?:[^"\\]|\\.)*"'
        self._nested = rf'(?i)"(?:{emails}|{drops})"\s*:\s*[\[{{]'
        # Cheap pre-filter (a non-null PII key, or an @): other texts are left untouched.
        self.suspect_pattern = rf'(?i)"(?:{emails}|{drops})"\s*:\s*[^n\s]|@'
        self._memo: dict[str, str] = {}

    def hash_email(self, email: str) -> str:
        canonical = email.strip().lower()
        digest = self._memo.get(canonical)
        if digest is None:
            digest = hmac.digest(self._key, canonical.encode(), "sha256").hex()
            self._memo[canonical] = digest
        return digest

    def _scrub(self, value: object, email_key: bool = False) -> object:
        if isinstance(value, dict):
            return {
                k: self._scrub(v, k.lower() in self._email_keys)
                for k, v in value.items()
                if k.lower() not in self._drop_keys
            }
        if isinstance(value, list):
            return [self._scrub(v, email_key) for v in value]
        if isinstance(value, str):
            if email_key:
                return self.hash_email(value)
            return _EMAIL_IN_TEXT.sub(lambda m: self.hash_email(m.group()), value)
        return value

    def scrub_text(self, text: str) -> str:
        return json.dumps(self._scrub(json.loads(text)), ensure_ascii=False, separators=(",", ":"))

    def _keyed(self, match: str) -> str:
        key, _, value = match.partition(":")
        value = value.strip()
        text = json.loads(value) if "\\" in value else value[1:-1]
        return f'{key.rstrip()}:"{self.hash_email(text)}"'

    def scrub(self, texts: pl.Series) -> pl.Series:
        """Scrub a column of JSON object texts (all valid JSON; nulls stay null)."""
        hits = texts.str.contains(self.suspect_pattern).fill_null(False).arg_true()
        if hits.len() == 0:
            return texts
        sub = texts.gather(hits)
        nested = sub.str.contains(self._nested)
        walked = nested.arg_true()
        if walked.len():
            rewritten = [self.scrub_text(t) for t in sub.gather(walked).to_list()]
            sub = sub.scatter(walked, pl.Series(rewritten, dtype=pl.String))
        flat = (~nested).arg_true()
        rest = sub.gather(flat)
        for pattern in self._drop_pairs:
            rest = rest.str.replace_all(pattern, "")
        for pattern, rewrite in (
            (self._keyed_email, self._keyed),
            (EMAIL_IN_TEXT, self.hash_email),
        ):
            found = rest.str.extract_all(pattern).explode().drop_nulls().unique().to_list()
            if found:
                rest = rest.str.replace_many(found, [rewrite(m) for m in found], leftmost=True)
        return texts.clone().scatter(hits, sub.scatter(flat, rest))


_IPV4_IN_TEXT = r"\b(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}\b"


def scrub_raw_text(texts: pl.Series, key: str, drop_keys: Iterable[str]) -> pl.Series:
    """Rejected lines keep their text for whoever fixes the file, but no person in it: emails
    become their HMAC, IPv4 addresses their /24, name-like JSON pairs go. Regex only, because a
    quarantined line need not parse."""
    scrubber = JsonScrubber(key, (), drop_keys)
    for pattern in scrubber._drop_pairs:
        texts = texts.str.replace_all(pattern, "")
    found = texts.str.extract_all(EMAIL_IN_TEXT).explode().drop_nulls().unique().to_list()
    if found:
        texts = texts.str.replace_many(
            found, [scrubber.hash_email(m) for m in found], leftmost=True
        )
    return texts.str.replace_all(_IPV4_IN_TEXT, "${1}.0/24")
