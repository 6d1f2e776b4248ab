"""The one place that hides credentials in database URLs and in free text.

`redact_url` parses the URL with SQLAlchemy's URL object (so a password holding `@`, `:`,
`/` or `%40` is cut where SQLAlchemy cuts it) and renders it with `hide_password=True`;
credentials in the query string (`?password=`, `sslpassword=`, ...) are masked too. A raw
`@` inside a password (SQLAlchemy reads `u:p@ss@host` as host `ss@host`) is treated as part
of the password: everything up to the last `@` of the authority is credentials.

`redact_text` masks every URL inside a message (error lines, driver errors): the one regex
here finds URL-shaped tokens and each goes through `redact_url`.

SQLAlchemy is imported inside the functions, so the CLI can import this module on its
startup path for free.
"""

from __future__ import annotations

import re

MASK = "***"
SECRET_QUERY_KEYS = frozenset({
    "password", "passwd", "pwd", "pass", "sslpassword", "sslkey_password", "secret",
    "token", "access_token", "api_key", "apikey", "auth",
})
# A URL-shaped token in free text; stops at whitespace and quotes.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"`<>]+")


def _mask_query(query: str) -> str:
    out = []
    for part in query.split("&"):
        key, sep, _ = part.partition("=")
        out.append(f"{key}={MASK}" if sep and key.strip().lower() in SECRET_QUERY_KEYS else part)
    return "&".join(out)


def _by_hand(url: str) -> str:
    """Redaction without a parser, for text SQLAlchemy cannot read as a URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    head, qsep, query = rest.partition("?")
    if "@" in head:
        creds, _, host = head.rpartition("@")
        user = creds.split(":", 1)[0]
        head = f"{user}:{MASK}@{host}" if ":" in creds else f"{user}@{host}"
    if qsep:
        query = _mask_query(query)
    return f"{scheme}://{head}{qsep}{query}"


def redact_url(url: str) -> str:
    """`url` with its password and query-string credentials replaced by `***`; a URL with
    no credentials comes back unchanged."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: cut it by hand
        return _by_hand(url)
    host = parsed.host or ""
    secret_query = any(k.lower() in SECRET_QUERY_KEYS for k in parsed.query)
    if parsed.password is None and "@" not in host and not secret_query:
        return url
    if "@" in host:  # a raw `@` in the password: the credentials end at the last `@`
        parsed = parsed.set(password=MASK, host=host.rpartition("@")[2])
    if secret_query:
        parsed = parsed.update_query_dict(
            {k: MASK for k in parsed.query if k.lower() in SECRET_QUERY_KEYS})
    text = parsed.render_as_string(hide_password=True)
    return text.replace("%2A%2A%2A", MASK)


def redact_text(text: str) -> str:
    """`text` with every URL in it passed through `redact_url`."""
    if "://" not in text:
        return text
    def one(m: re.Match[str]) -> str:
        token = m.group(0)
        url = token.rstrip(":,;.)]}")  # punctuation of the sentence, not of the URL
        return redact_url(url) + token[len(url):]

    return _URL_IN_TEXT.sub(one, text)

