"""The public input contract: every rule a caller's value must meet, defined once.

Both bottom layers need these rules (memory/ checks texts and read options, storage/ builds keys
only from valid names), so they live here, beside `errors.py`, below every package; each layer
above derives from this module instead of restating a limit:

    memory/, actors/   call the check_* functions (InvalidInput says what to fix)
    storage/, cluster/ check names and tags before they reach keys, paths or actor tables
    serve/             turns the same constants into pydantic fields, so the OpenAPI page and
                       the MCP tool schemas show exactly what the server accepts

Pure Python, no imports of ours but `errors`; nothing here reads the environment.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

from errors import InvalidInput

__all__ = [
    "TENANT_PATTERN", "MEMORY_NAME_PATTERN", "TAG_PATTERN", "AUTO_TAG_PREFIX", "REQUEST_ID_PATTERN",
    "JOB_ID_PATTERN",
    "MAX_TEXT_CHARS", "MAX_DOMAIN_CHARS", "MAX_DESCRIPTION_CHARS", "MAX_ITEMS_PER_WRITE",
    "MAX_BATCH_ITEMS",
    "MIN_TOP_K", "MAX_TOP_K", "MAX_TEMPERATURE", "DEFAULT_TEMPERATURE", "MAX_TOKENS",
    "MAX_LEARNING_RATE", "MAX_HISTORY", "MAX_PAGE", "DEFAULT_PAGE", "NAME_PREFIX_PATTERN",
    "check_tenant", "check_memory_name", "check_tag", "check_text", "check_new_text", "has_visible", "check_domain",
    "check_new_domain", "text_too_long",
    "check_description", "check_top_k", "check_temperature", "check_max_tokens",
    "check_learning_rate", "check_request_id", "check_after_request_id", "blank_as_unset", "check_page",
    "as_read",
    "same_words",
]

# ---- names (they reach Redis keys, object keys, file paths and actor tables) ------------------
# Patterns are written without anchors; callers match them in full (`re.fullmatch`, or
# pydantic's `pattern` with ^...$ added by `anchored`).
TENANT_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}"
MEMORY_NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,62}"
TAG_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
# The id of a forget job (uuid4 hex), as returned by forget and read back in its status route.
JOB_ID_PATTERN = r"[0-9a-f]{32}"
# A client's idempotency key for a write (REST field `request_id` or header `Idempotency-Key`).
REQUEST_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
# Internal auto-checkpoint tags start with this; '@' is never in a user tag, so they cannot clash.
AUTO_TAG_PREFIX = "auto@"

# ---- texts and options ----------------------------------------------------------------------
MAX_TEXT_CHARS = 32_768  # MiniLM reads 256 tokens; longer text is almost always a client bug
MAX_DOMAIN_CHARS = 64
MAX_DESCRIPTION_CHARS = 1_000
MAX_ITEMS_PER_WRITE = 4_096  # texts in one write (one WAL entry), whatever the entry point
MAX_BATCH_ITEMS = 256  # texts in one REST/MCP observe (`contexts`); bodies stay under 1 MB
MIN_TOP_K, MAX_TOP_K = 1, 50
MAX_TEMPERATURE = 10.0  # 0 is allowed and means greedy (all attention on the best pattern)
DEFAULT_TEMPERATURE = 0.05
MAX_TOKENS = 4_096  # words in an infer response
MAX_LEARNING_RATE = 2.0  # (0, 2]: above that each step overshoots
MAX_HISTORY = 1_000  # observations returned by one history call
# Listings of memories come in pages: `limit` names after `cursor` (the last name of the previous
# page), optionally only names starting with a prefix.
MAX_PAGE, DEFAULT_PAGE = 1_000, 100
NAME_PREFIX_PATTERN = r"[a-z0-9._-]{0,63}"

# A domain has none of the C0 or C1 control characters, nor DEL (all invisible or line-breaking).
_CONTROL_CHAR_CLASS = r"\x00-\x1f\x7f-\x9f"
DOMAIN_PATTERN = rf"[^{_CONTROL_CHAR_CLASS}]+"
_CONTROL_CHARS = re.compile(rf"[{_CONTROL_CHAR_CLASS}]")
# A surrogate code point left in a str is half a pair (JSON "\ud800"): not text, not encodable.
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Zs"})  # Unicode categories that show nothing


def anchored(pattern: str) -> str:
    """`pattern` matched in full, for tools (pydantic, JSON schema) that search instead."""
    return f"^{pattern}$"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(pattern: str, value: Any, problem: str) -> str:
    """`value` if it is a string matching `pattern` in full; else InvalidInput(`problem`)."""
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise InvalidInput(problem)
    return value


def check_tenant(tenant: Any) -> str:
    return _require(TENANT_PATTERN, tenant, f"tenant {_show(tenant)} must be 1-128 letters, digits "
                                            "or ._@+- (starting with a letter or digit)")


def check_memory_name(name: Any, field: str = "memory name") -> str:
    return _require(MEMORY_NAME_PATTERN, name, f"{field} {_show(name)} is invalid: use 1-63 lowercase "
                                               "letters, digits, '.', '_' or '-', starting with a "
                                               "letter or digit")


def check_tag(tag: Any) -> str:
    """A user checkpoint tag."""
    return _require(TAG_PATTERN, tag, f"checkpoint tag {_show(tag)} is invalid: use 1-64 letters, "
                                      "digits, '.', '_' or '-', starting with a letter or digit "
                                      "(e.g. 'v1.0', 'pre-experiment')")


def check_after_request_id(after: Any, request_id: str) -> str | None:
    """The write a write must follow: a request id, not the write's own."""
    after = check_request_id(after)
    if after is not None and after == request_id:
        raise InvalidInput(f"after_request_id {after!r} names this write itself: name the write it "
                           "must follow, or leave it out")
    return after


def check_request_id(request_id: Any) -> str | None:
    if request_id is None:
        return None
    return _require(REQUEST_ID_PATTERN, request_id, f"request_id {_show(request_id)} is invalid: use "
                                                    "1-128 letters, digits, '.', '_', ':' or '-'")


def blank_as_unset(value: Any) -> Any:
    """An operator's `NMEM_X=` (set but empty) means "not set", as in most twelve-factor apps;
    used as a `mode="before"` validator by every settings model."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def text_too_long(length: int, field: str = "text") -> InvalidInput:
    return InvalidInput(f"{field} is {length} characters; the limit is {MAX_TEXT_CHARS}")


def as_read(text: str) -> str:
    """A text as the memory reads it: in Unicode's NFKC form, so a character spelt in other code
    points (an accent composed or not, a fullwidth digit, a ligature) reads the same. Encoders
    read this form; `same_words` compares it."""
    return unicodedata.normalize("NFKC", text)


def same_words(text: str) -> str:
    """A text as a statement: its words, case, spacing and closing punctuation aside ("Carol's
    PIN is 9981." and "carol's pin  is 9981" say the same), and how Unicode spells a character
    ("é" as one code point or as "e" and an accent; fullwidth "９" or "9": NFKC). Where a memory
    tells whether it holds a text: surprise's `skip`, and forget's text selectors."""
    folded = as_read(as_read(text).casefold())
    return " ".join(folded.split()).rstrip(".!?;:, ") or text


def check_text(text: Any, field: str = "text") -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"{field} must be a non-empty string with some non-whitespace text")
    if len(text) > MAX_TEXT_CHARS:
        raise text_too_long(len(text), field)
    if "\x00" in text:
        raise InvalidInput(f"{field} must not contain NUL characters")
    surrogate = _LONE_SURROGATE.search(text)
    if surrogate:
        raise InvalidInput(f"{field} is not valid Unicode: character {surrogate.start() + 1} is half of a "
                           f"surrogate pair (U+{ord(surrogate.group()):04X}); send the whole character")
    return text


def has_visible(text: str) -> bool:
    """Whether `text` shows anything: a character that is not whitespace, zero-width, format
    or control (stops at the first one, so it costs nothing on ordinary text)."""
    return any(not ch.isspace() and unicodedata.category(ch) not in _INVISIBLE for ch in text)


def check_new_text(text: Any, field: str = "text") -> str:
    """What a new write or query must be: `check_text`, and at least one visible character (a
    text of only zero-width, format or control characters says nothing). Texts already stored
    are read back with `check_text` alone, so one accepted before this rule still replays."""
    check_text(text, field)
    if not has_visible(text):
        raise InvalidInput(f"{field} has no visible character (only whitespace, zero-width, format or "
                           "control characters); send some text")
    return text


def check_domain(domain: Any) -> str | None:
    """None (no domain) or 1-64 characters without control characters."""
    if domain is None:
        return None
    if not isinstance(domain, str):
        raise InvalidInput(f"domain must be a string (1 to {MAX_DOMAIN_CHARS} characters), or omitted; "
                           f"got {type(domain).__name__}")
    if not 1 <= len(domain) <= MAX_DOMAIN_CHARS or _CONTROL_CHARS.search(domain):
        raise InvalidInput(f"domain must be 1 to {MAX_DOMAIN_CHARS} characters without control "
                           "characters, or omitted")
    return domain


def check_new_domain(domain: Any) -> str | None:
    """What a new write's domain must be: `check_domain`, and a visible character (a domain of
    only spaces would show as nothing in stats and filters). Domains already stored are read back
    with `check_domain` alone, so one accepted before this rule still replays and can be forgotten."""
    check_domain(domain)
    if domain is not None and not has_visible(domain):
        raise InvalidInput("domain has no visible character (only whitespace, zero-width or format "
                           "characters); name it, or omit it")
    return domain


def check_description(description: Any) -> str:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS \
            or "\x00" in description:
        raise InvalidInput(f"description must be text of at most {MAX_DESCRIPTION_CHARS} "
                           "characters without NUL")
    return description


def check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not MIN_TOP_K <= top_k <= MAX_TOP_K:
        raise InvalidInput(f"top_k must be an integer from {MIN_TOP_K} to {MAX_TOP_K}")
    return top_k


def check_temperature(temperature: Any) -> float:
    """None means the default; 0 means greedy."""
    if temperature is None:
        return DEFAULT_TEMPERATURE
    if not _is_number(temperature) or not 0 <= temperature <= MAX_TEMPERATURE:
        raise InvalidInput(f"temperature must be a number from 0 (greedy) to {MAX_TEMPERATURE:g}")
    return float(temperature)


def check_max_tokens(max_tokens: Any) -> int | None:
    if max_tokens is None:
        return None
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) \
            or not 1 <= max_tokens <= MAX_TOKENS:
        raise InvalidInput(f"max_tokens must be an integer from 1 to {MAX_TOKENS}, or omitted")
    return max_tokens


def check_learning_rate(learning_rate: Any) -> float | None:
    if learning_rate is None:
        return None
    if not _is_number(learning_rate) or not 0 < learning_rate <= MAX_LEARNING_RATE:
        raise InvalidInput(f"learning_rate must be a number in (0, {MAX_LEARNING_RATE:g}], or omitted")
    return float(learning_rate)


def check_page(cursor: Any, limit: Any, prefix: Any) -> tuple[str | None, int, str]:
    """(cursor, limit, prefix) of a listing; None/blank prefix means every name."""
    if cursor is not None:
        check_memory_name(cursor, "cursor")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_PAGE}")
    prefix = prefix or ""
    if not isinstance(prefix, str) or not re.fullmatch(NAME_PREFIX_PATTERN, prefix):
        raise InvalidInput(f"prefix {_show(prefix)} must be up to 63 of a-z 0-9 . _ - (the start "
                           "of memory names)")
    return cursor, limit, prefix
