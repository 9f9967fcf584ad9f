"""PII redaction before anything a customer or owner wrote is stored, with counts."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from knowledge.errors import Invalid
from knowledge.settings import Settings

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# 13 to 19 digits, optionally grouped by spaces or dashes: checked with Luhn before redacting.
CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d ().-]{7,}\d(?![\w])")
# National identity numbers: US SSN, UK National Insurance, Spanish DNI/NIE, Dutch BSN-like
# nine digits written as 3-3-3 or 4-2-3. More can be configured per deployment.
NATIONAL_IDS: dict[str, str] = {
    "us_ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    "uk_nino": r"\b[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
    "es_dni": r"\b[XYZ]?\d{7,8}-?[A-HJ-NP-TV-Z]\b",
}


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


@dataclass(frozen=True, slots=True)
class Redacted:
    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Redactor:
    """Replaces e-mail addresses, card numbers that pass the Luhn check, national IDs and
    phone numbers with placeholders; extra patterns (name -> regex) come from the settings."""

    def __init__(self, extra: Mapping[str, str] | None = None) -> None:
        self._ids = [(name, re.compile(p)) for name, p in {**NATIONAL_IDS,
                                                           **(extra or {})}.items()]

    def redact(self, text: str | None) -> Redacted:
        if not text:
            return Redacted(text or "")
        counts: Counter[str] = Counter()

        def sub(pattern: re.Pattern[str], label: str, token: str,
                accept: Callable[[str], bool] | None = None) -> None:
            nonlocal text

            def replace(match: re.Match[str]) -> str:
                if accept is not None and not accept(match.group(0)):
                    return match.group(0)
                counts[label] += 1
                return token

            assert text is not None
            text = pattern.sub(replace, text)

        sub(EMAIL, "email", "[EMAIL]")
        sub(CARD, "card", "[CARD]", lambda m: luhn_valid(re.sub(r"\D", "", m)))
        for name, pattern in self._ids:
            sub(pattern, name, "[ID]")
        sub(PHONE, "phone", "[PHONE]", _looks_like_phone)
        assert text is not None
        return Redacted(text, dict(counts))


def redactor_from_settings(settings: Settings) -> Redactor:
    """The redactor with LEARNKB_REDACT_EXTRA_PATTERNS ({"name": "regex", ...}) added."""
    raw = settings.redact_extra_patterns.strip()
    if not raw:
        return Redactor()
    try:
        extra = json.loads(raw)
        if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
            raise ValueError("not an object of name -> pattern")
        for pattern in extra.values():
            re.compile(pattern)
    except (ValueError, re.error) as exc:
        raise Invalid(f"LEARNKB_REDACT_EXTRA_PATTERNS is not a JSON object of valid regular "
                      f"expressions: {exc}", field="redact_extra_patterns") from exc
    return Redactor(extra)


def _looks_like_phone(candidate: str) -> bool:
    """Nine to fifteen digits, and written like a phone number (a + or 00 prefix, or digit
    groups), so a bare order number is left alone."""
    digits = re.sub(r"\D", "", candidate)
    if not 9 <= len(digits) <= 15:
        return False
    grouped = bool(re.search(r"\d[ ().-]+\d", candidate))
    return candidate.startswith(("+", "00", "(")) or grouped
