"""PII redaction: what is caught, what is left alone, and the counts."""

from __future__ import annotations

from knowledge.redaction import Redactor, luhn_valid


def test_emails_cards_phones_and_ids_are_replaced_and_counted() -> None:
    r = Redactor().redact(
        "Mail me at jane.doe+shop@example.co.uk or call +44 20 7946 0958. "
        "Card 4111 1111 1111 1111, SSN 078-05-1120, NI number AB 12 34 56 C.")
    assert "jane" not in r.text and "[EMAIL]" in r.text
    assert "4111" not in r.text and "[CARD]" in r.text
    assert "7946" not in r.text and "[PHONE]" in r.text
    assert "078-05-1120" not in r.text and "AB 12" not in r.text
    assert r.counts == {"email": 1, "card": 1, "phone": 1, "us_ssn": 1, "uk_nino": 1}
    assert r.total == 5


def test_what_is_not_pii_is_left_alone() -> None:
    text = ("Order 100234567 for the QX-7731 gasket, 2 x 34.90 EUR, delivered 2026-11-20. "
            "Card-like 4111 1111 1111 1112 fails Luhn.")
    r = Redactor().redact(text)
    assert r.text == text and r.total == 0


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")


def test_configured_patterns_are_applied() -> None:
    r = Redactor({"iban": r"\bDE\d{20}\b"}).redact("Refund to DE44500105175407324931 please")
    assert r.text == "Refund to [ID] please" and r.counts == {"iban": 1}
