"""Private information in a DM: card numbers, e-mail addresses, phone numbers, IBANs and
postal addresses, located by character spans, and a ``mask`` that hides them.

Checks keep false alarms down: a card number must pass the Luhn check and start like a
card (2-6), an IBAN must have its country's length and pass the ISO 7064 mod-97 check,
a phone number must have 8 to 15 digits and start with ``+``, ``00``, ``0`` or ``(``.
"""

import re
from collections.abc import Iterable

from shared.events import PrivateInfoFinding, PrivateInfoKind

_CARD = re.compile(r"(?<![\w+])[2-6]\d{3}(?:[ -]?\d){9,15}(?!\w)")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}(?![\w-])")
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2})(\d{2})(?=[ ]?[A-Z0-9])")
_NOT_AFTER_DIGITS = r"(?<![\w+])(?<!\d )(?<!\d-)"
_PHONE = re.compile(
    rf"{_NOT_AFTER_DIGITS}(?:\+|00)\d{{1,3}}(?:[ .-]?\(?\d{{1,5}}\)?){{1,5}}(?!\w)"
    rf"|{_NOT_AFTER_DIGITS}\(?0\d{{1,4}}\)?(?:[ .-]?\d{{2,5}}){{1,4}}(?!\w)"
    r"|(?<![\w+])\(\d{3}\)[ .-]?\d{3}[ .-]?\d{4}(?!\w)"
)
_STREET_WORDS_AFTER = (
    r"street|st\.?|road|rd\.?|avenue|ave\.?|lane|ln\.?|drive|dr\.?|boulevard|blvd\.?|"
    r"terrace|way|court|ct\.?|place|pl\.?|square|sq\.?|close|crescent|highway|hwy"
)
_STREET_WORDS_BEFORE = (
    r"calle|c/|avenida|avda\.?|av\.|paseo|plaza|rue|boulevard|bd|avenue|all[ée]e|chemin|"
    r"place|via|viale|piazza|corso|largo|rua|travessa|pra[çc]a|alameda|estrada"
)
_ADDRESS = re.compile(
    rf"\b\d{{1,5}}[a-z]?,?\s+(?:[A-Z][\w'.-]*\s+){{1,4}}(?:{_STREET_WORDS_AFTER})\b"
    rf"|(?:\b\d{{1,4}}(?:bis|ter)?,?\s+)?\b(?:{_STREET_WORDS_BEFORE})\s+(?:(?:de|del|la|las|los|des|du|di|da|do|dos|das)\s+)*"
    r"[A-ZÀ-Ý][\w'.-]*(?:\s+[A-ZÀ-Ý][\w'.-]*){0,3},?\s+(?:n[º°o.]\s*)?\d{1,5}[a-z]?\b"
    r"|\b[A-ZÄÖÜ][\wäöüß-]*(?:stra(?:ß|ss)e|str\.|weg|gasse|platz|allee|ring|damm)\s+\d{1,4}[a-z]?\b",
    re.IGNORECASE,
)
_UK_POSTCODE = re.compile(r"^,?\s+[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b")
# Lengths of IBANs by country (ISO 13616 registry, the countries most DMs come from).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24,
    "AT": 20,
    "BE": 16,
    "BG": 22,
    "BR": 29,
    "CH": 21,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "EE": 20,
    "ES": 24,
    "FI": 18,
    "FR": 27,
    "GB": 22,
    "GR": 27,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IS": 26,
    "IT": 27,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MT": 31,
    "NL": 18,
    "NO": 15,
    "PL": 28,
    "PT": 25,
    "RO": 24,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "TR": 26,
    "AE": 23,
    "SA": 24,
    "IL": 23,
}
MASKS: dict[PrivateInfoKind, str] = {kind: f"[{kind.value}]" for kind in PrivateInfoKind}
# A card's security code, named as customers write it in en, es, de, fr, it and pt.
_SECURITY_CODE = re.compile(
    r"\b(?:cvv2?|cvc2?|cid|csc|security\s+code|card\s+verification(?:\s+(?:code|value))?"
    r"|c[oó]digo\s+de\s+seguridad|c[oó]digo\s+de\s+seguran[cç]a|c[oó]digo\s+cvv"
    r"|sicherheitscode|pr[uü]f(?:ziffer|nummer|code)|kartenpr[uü]fnummer"
    r"|cryptogramme(?:\s+visuel)?|code\s+de\s+s[ée]curit[ée]|codice\s+(?:di\s+sicurezza|cvv))"
    r"\W{0,3}(?:(?:is|es|ist|est|[eé]|:|=|n[º°o.]?)\s*)?(\d{3,4})(?!\d)",
    re.IGNORECASE,
)


def luhn_valid(digits: str) -> bool:
    """True when a string of digits passes the Luhn (mod 10) check."""
    total = 0
    for position, character in enumerate(reversed(digits)):
        value = int(character)
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """True when ``iban`` (no spaces) has its country's length and passes mod-97."""
    country = iban[:2]
    expected = IBAN_LENGTHS.get(country)
    if expected is not None and len(iban) != expected:
        return False
    if not 15 <= len(iban) <= 34 or not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(character, 36)) for character in rearranged)) % 97 == 1


def find(text: str | None) -> list[PrivateInfoFinding]:
    """Every piece of private information in ``text``, by start offset, not overlapping."""
    if not text:
        return []
    candidates: list[PrivateInfoFinding] = [
        *_ibans(text),
        *_cards(text),
        *_matches(_EMAIL, text, PrivateInfoKind.EMAIL),
        *_phones(text),
        *_addresses(text),
    ]
    kept: list[PrivateInfoFinding] = []
    for finding in candidates:
        if not any(finding.start < other.end and other.start < finding.end for other in kept):
            kept.append(finding)
    return sorted(kept, key=lambda finding: finding.start)


def mask(text: str, findings: Iterable[PrivateInfoFinding]) -> str:
    """``text`` with every finding replaced by its kind in brackets (``[card]``)."""
    pieces: list[str] = []
    cursor = 0
    for finding in sorted(findings, key=lambda finding: finding.start):
        if finding.start < cursor:
            cursor = max(cursor, finding.end)
            continue
        pieces.append(text[cursor : finding.start])
        pieces.append(MASKS[finding.kind])
        cursor = finding.end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _matches(
    pattern: re.Pattern[str], text: str, kind: PrivateInfoKind
) -> Iterable[PrivateInfoFinding]:
    for match in pattern.finditer(text):
        yield PrivateInfoFinding(kind=kind, start=match.start(), end=match.end())


def _cards(text: str) -> Iterable[PrivateInfoFinding]:
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield PrivateInfoFinding(
                kind=PrivateInfoKind.CARD, start=match.start(), end=match.end()
            )


def _ibans(text: str) -> Iterable[PrivateInfoFinding]:
    for match in _IBAN_START.finditer(text):
        country = match.group(1)
        lengths = [IBAN_LENGTHS[country]] if country in IBAN_LENGTHS else range(34, 14, -1)
        for length in lengths:
            end = _span_of_characters(text, match.start(), length)
            if end is None:
                continue
            compact = text[match.start() : end].replace(" ", "").upper()
            boundary_ok = end == len(text) or not text[end].isalnum()
            if boundary_ok and iban_valid(compact):
                yield PrivateInfoFinding(kind=PrivateInfoKind.IBAN, start=match.start(), end=end)
                break


def _span_of_characters(text: str, start: int, count: int) -> int | None:
    # The end of a run of ``count`` alphanumerics from ``start``, allowing single spaces.
    seen = 0
    position = start
    while position < len(text) and seen < count:
        character = text[position]
        if character.isalnum() and character.isascii():
            seen += 1
        elif character != " " or text[position - 1] == " ":
            return None
        position += 1
    return position if seen == count else None


def _phones(text: str) -> Iterable[PrivateInfoFinding]:
    for match in _PHONE.finditer(text):
        digits = sum(character.isdigit() for character in match.group())
        if 8 <= digits <= 15:
            yield PrivateInfoFinding(
                kind=PrivateInfoKind.PHONE, start=match.start(), end=match.end()
            )


def _addresses(text: str) -> Iterable[PrivateInfoFinding]:
    for match in _ADDRESS.finditer(text):
        end = match.end()
        if postcode := _UK_POSTCODE.match(text[end:]):
            end += postcode.end()
        yield PrivateInfoFinding(kind=PrivateInfoKind.ADDRESS, start=match.start(), end=end)


def security_codes(text: str) -> list[tuple[int, int]]:
    """Spans of the digits of card security codes (CVV, CVC...) named in ``text``."""
    return [match.span(1) for match in _SECURITY_CODE.finditer(text)]


def mask_cards(text: str) -> tuple[str, bool]:
    """``text`` with card numbers masked but their last four digits, and security codes near a
    card masked whole; and whether anything was masked.

    A security code counts only in a text that holds a card number, so an order number
    after "CVV" in a text with no card stays as it is.
    """
    cards = [finding for finding in find(text) if finding.kind == PrivateInfoKind.CARD]
    if not cards:
        return text, False
    spans: list[tuple[int, int, str]] = []
    for card in cards:
        digits = re.sub(r"\D", "", text[card.start : card.end])
        spans.append((card.start, card.end, f"[card \u2022\u2022\u2022\u2022 {digits[-4:]}]"))
    for start, end in security_codes(text):
        if not any(start < card_end and card_start < end for card_start, card_end, _ in spans):
            spans.append((start, end, "\u2022" * (end - start)))
    return _replaced(text, spans), True


def mask_kinds(text: str, kinds: Iterable[PrivateInfoKind]) -> tuple[str, list[PrivateInfoKind]]:
    """``text`` with every finding of ``kinds`` masked (cards keep their last four digits).

    Returns the masked text and the kinds actually masked, in ``PrivateInfoKind`` order.
    """
    wanted = set(kinds)
    masked: set[PrivateInfoKind] = set()
    if PrivateInfoKind.CARD in wanted:
        text, card = mask_cards(text)
        if card:
            masked.add(PrivateInfoKind.CARD)
    others = [f for f in find(text) if f.kind in wanted and f.kind != PrivateInfoKind.CARD]
    if others:
        text = mask(text, others)
        masked.update(finding.kind for finding in others)
    return text, [kind for kind in PrivateInfoKind if kind in masked]


def _replaced(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    pieces: list[str] = []
    cursor = 0
    for start, end, replacement in sorted(spans):
        if start < cursor:
            continue
        pieces += [text[cursor:start], replacement]
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)
