"""Days in the customer's words: which day an hours question is about, and how to say a day.

No framework: plain tables for the six supported languages (en, es, de, fr, it, pt).
"""

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.rule_guards import plain_text

WEEKDAY_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "es": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
    "de": ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"),
    "fr": ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
    "it": ("lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica"),
    "pt": ("segunda-feira", "terça-feira", "quarta-feira", "quinta-feira", "sexta-feira",
           "sábado", "domingo"),
}  # fmt: skip
MONTH_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"),
    "es": ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
           "septiembre", "octubre", "noviembre", "diciembre"),
    "de": ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
           "September", "Oktober", "November", "Dezember"),
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
           "septembre", "octobre", "novembre", "décembre"),
    "it": ("gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto",
           "settembre", "ottobre", "novembre", "dicembre"),
    "pt": ("janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto",
           "setembro", "outubro", "novembro", "dezembro"),
}  # fmt: skip
_AT = {"en": "at", "es": "a las", "de": "um", "fr": "à", "it": "alle", "pt": "às"}
_DATE = {
    "en": "{weekday} {day} {month}",
    "es": "el {weekday} {day} de {month}",
    "de": "{weekday}, den {day}. {month}",
    "fr": "le {weekday} {day} {month}",
    "it": "{weekday} {day} {month}",
    "pt": "{weekday}, {day} de {month}",
}

# Fixed-date days people ask about, eves first (they contain the day's own name).
_NAMED_DAYS: tuple[tuple[tuple[int, int], tuple[str, ...]], ...] = (
    ((12, 24), ("christmas eve", "nochebuena", "heiligabend", "heiliger abend",
                "veille de noel", "reveillon de noel", "vigilia di natale", "vigilia de natal",
                "vespera de natal", "consoada")),
    ((12, 31), ("new year's eve", "new years eve", "nochevieja", "silvester",
                "saint sylvestre", "saint-sylvestre", "san silvestro", "ultimo dell'anno",
                "vespera de ano novo", "passagem de ano", "reveillon")),
    ((12, 26), ("boxing day", "stephen's day", "san esteban", "stephanstag",
                "zweiter weihnachtstag", "2. weihnachtstag", "santo stefano")),
    ((12, 25), ("christmas", "xmas", "navidad", "weihnachten", "weihnachtstag",
                "noel", "natale", "natal", "dia de natal")),
    ((1, 1), ("new year's day", "new year", "new years day", "ano nuevo", "neujahr",
              "jour de l'an", "nouvel an", "capodanno", "primo dell'anno", "ano novo",
              "dia de ano novo")),
)  # fmt: skip
_TODAY = ("today", "tonight", "hoy", "heute", "aujourd'hui", "ce soir", "oggi", "stasera", "hoje")
_TOMORROW = ("tomorrow", "manana", "morgen", "demain", "domani", "amanha")
_WEEKDAY_WORDS: tuple[tuple[str, ...], ...] = (
    ("monday", "lunes", "montag", "lundi", "lunedi", "segunda"),
    ("tuesday", "martes", "dienstag", "mardi", "martedi", "terca"),
    ("wednesday", "miercoles", "mittwoch", "mercredi", "mercoledi", "quarta"),
    ("thursday", "jueves", "donnerstag", "jeudi", "giovedi", "quinta"),
    ("friday", "viernes", "freitag", "vendredi", "venerdi", "sexta"),
    ("saturday", "sabado", "samstag", "samedi", "sabato"),
    ("sunday", "domingo", "sonntag", "dimanche", "domenica"),
)  # fmt: skip


def _month_numbers() -> dict[str, int]:
    numbers: dict[str, int] = {}
    for names in MONTH_NAMES.values():
        for position, name in enumerate(names, start=1):
            numbers[plain_text(name)] = position
            numbers[plain_text(name)[:3]] = position
    return numbers


_MONTHS = _month_numbers()
_MONTH_WORD = "|".join(sorted(map(re.escape, _MONTHS), key=len, reverse=True))
_DAY_MONTH = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th|\.|º)?\s*(?:de\s+|of\s+)?({_MONTH_WORD})\b")
_MONTH_DAY = re.compile(rf"\b({_MONTH_WORD})\s+(\d{{1,2}})(?:st|nd|rd|th)?\b")
_NUMERIC = re.compile(r"\b(\d{1,2})[./](\d{1,2})\b")


def _words(phrases: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in phrases) + r")(?!\w)")


_NAMED = tuple((month_day, _words(names)) for month_day, names in _NAMED_DAYS)
_TODAY_RE, _TOMORROW_RE = _words(_TODAY), _words(_TOMORROW)
_WEEKDAY_RES = tuple(_words(names) for names in _WEEKDAY_WORDS)


def _next(month: int, day: int, today: date) -> date | None:
    for year in (today.year, today.year + 1):
        try:
            candidate = date(year, month, day)
        except ValueError:
            return None
        if candidate >= today:
            return candidate
    return None


def day_asked_about(text: str, at: datetime, timezone: str) -> date | None:
    """The local day a question is about ("on Christmas Day", "tomorrow"), or None."""
    plain = plain_text(text)
    today = at.astimezone(ZoneInfo(timezone)).date()
    for (month, day), pattern in _NAMED:
        if pattern.search(plain):
            return _next(month, day, today)
    if match := _DAY_MONTH.search(plain):
        return _next(_MONTHS[match.group(2)], int(match.group(1)), today)
    if match := _MONTH_DAY.search(plain):
        return _next(_MONTHS[match.group(1)], int(match.group(2)), today)
    if match := _NUMERIC.search(plain):
        day, month = int(match.group(1)), int(match.group(2))
        if 1 <= month <= 12:
            return _next(month, day, today)
    if _TOMORROW_RE.search(plain):
        return today + timedelta(days=1)
    if _TODAY_RE.search(plain):
        return today
    for weekday, pattern in enumerate(_WEEKDAY_RES):
        if pattern.search(plain):
            return today + timedelta(days=(weekday - today.weekday()) % 7)
    return None


def say_day(day: date, language: str) -> str:
    """``day`` as a person writes it in ``language`` ("Friday 25 December")."""
    lang = language if language in _DATE else "en"
    return _DATE[lang].format(
        weekday=WEEKDAY_NAMES[lang][day.weekday()],
        day=day.day,
        month=MONTH_NAMES[lang][day.month - 1],
    )


def say_moment(moment: datetime, timezone: str, language: str) -> str:
    """When the team is back, in ``language``: "Monday 30 November at 09:00"."""
    local = moment.astimezone(ZoneInfo(timezone))
    lang = language if language in _AT else "en"
    return f"{say_day(local.date(), lang)} {_AT[lang]} {local:%H:%M}"
