import re

import pytest

from shared.events import PrivateInfoKind
from shared.pii import find, iban_valid, luhn_valid, mask


def kinds(text: str) -> list[PrivateInfoKind]:
    return [finding.kind for finding in find(text)]


@pytest.mark.parametrize(
    "number",
    ["4539 1488 0343 6467", "4111111111111111", "5500-0000-0000-0004", "378282246310005"],
)
def test_card_numbers_that_pass_luhn_are_found(number: str) -> None:
    assert kinds(f"please charge {number} today") == [PrivateInfoKind.CARD]


@pytest.mark.parametrize(
    "number", ["4539 1488 0343 6468", "4111111111111112", "1234 5678 9012 3456"]
)
def test_card_like_numbers_failing_luhn_or_prefix_are_not_cards(number: str) -> None:
    assert PrivateInfoKind.CARD not in kinds(f"please charge {number} today")


def test_luhn_check() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


@pytest.mark.parametrize(
    "phone",
    [
        "+44 7700 900123",
        "+1 (415) 555-0132",
        "+33 6 12 34 56 78",
        "+49 151 23456789",
        "+55 11 91234-5678",
        "0044 20 7946 0018",
        "020 7946 0018",
        "(415) 555-0132",
    ],
)
def test_international_and_national_phone_formats(phone: str) -> None:
    findings = find(f"call me on {phone} after 6")
    assert [f.kind for f in findings] == [PrivateInfoKind.PHONE]
    assert f"call me on {phone} after 6"[findings[0].start : findings[0].end] == phone


@pytest.mark.parametrize(
    "text", ["order 113542617735902 please", "I paid 1500 on 12/03/2024", "room 12, 3 nights"]
)
def test_order_numbers_dates_and_amounts_are_not_phones(text: str) -> None:
    assert find(text) == []


def test_email_inside_a_sentence_is_found_with_its_exact_span() -> None:
    text = "Hi, write to me at anna.b+shop@mail.example.co.uk, thanks!"
    (finding,) = find(text)
    assert finding.kind is PrivateInfoKind.EMAIL
    assert text[finding.start : finding.end] == "anna.b+shop@mail.example.co.uk"


@pytest.mark.parametrize(
    "iban",
    ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR14 2004 1010 0505 0001 3M02 606"],
)
def test_ibans_with_a_valid_checksum_are_found(iban: str) -> None:
    text = f"My IBAN is {iban} for the refund"
    (finding,) = find(text)
    assert finding.kind is PrivateInfoKind.IBAN
    assert text[finding.start : finding.end] == iban


def test_iban_with_a_wrong_check_digit_is_refused() -> None:
    assert not iban_valid("GB83WEST12345698765432")
    assert PrivateInfoKind.IBAN not in kinds("IBAN GB83 WEST 1234 5698 7654 32")


@pytest.mark.parametrize(
    "text",
    [
        "deliver to 742 Evergreen Terrace please",
        "Calle Mayor 15, Madrid",
        "Hauptstraße 5, 10115 Berlin",
        "12 rue de la Paix, 75002 Paris",
        "Via Roma 10, Milano",
    ],
)
def test_street_addresses_in_several_languages(text: str) -> None:
    assert PrivateInfoKind.ADDRESS in kinds(text)


def test_masked_text_never_contains_the_original_digits_or_address() -> None:
    text = (
        "card 4539 1488 0343 6467, phone +44 7700 900123, mail john.smith@example.com, "
        "IBAN GB82 WEST 1234 5698 7654 32"
    )
    masked = mask(text, find(text))
    assert masked == "card [card], phone [phone], mail [email], IBAN [iban]"
    assert not re.search(r"\d", masked)
    assert "john.smith" not in masked


def test_mask_without_findings_is_the_text() -> None:
    assert mask("nothing here", []) == "nothing here"
