"""FAQ answers: a YAML knowledge base searched by TF-IDF cosine similarity (no framework).

Every question variant (in any language) is a document; a customer's message is
scored against all of them and an entry scores its best variant. Word n-grams
carry meaning, character n-grams absorb typos and inflections ("deliver",
"delivery", "envío", "envio"). An entry's keywords ("paypal", "vat number") lean
the search towards it; the knowledge base's unanswered questions (jobs, stock,
a discount code that fails) compete with the entries and never answer. Below the
threshold, or too close to the runner-up, the bot does not guess.
"""

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from scipy.sparse import csr_matrix, hstack  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import (  # type: ignore[import-untyped]
    ENGLISH_STOP_WORDS,
    TfidfVectorizer,
)
from sklearn.preprocessing import normalize  # type: ignore[import-untyped]

from shared import packaged
from shared.rule_guards import plain_text, without_greeting

if TYPE_CHECKING:
    from services.responder.answer_check import AnswerCheck

DEFAULTS_PACKAGE = "services.responder.defaults"
DEFAULT_FAQ_RESOURCE = "faq.yaml"

# Function words carry no topic: without them "what is your VAT number" stops looking
# like "what is your phone number". English from scikit-learn, Spanish and chat fillers here.
_SPANISH_STOP_WORDS = frozenset(
    [
        "de",
        "la",
        "que",
        "el",
        "en",
        "y",
        "a",
        "los",
        "se",
        "del",
        "las",
        "un",
        "por",
        "con",
        "no",
        "una",
        "su",
        "para",
        "es",
        "al",
        "lo",
        "como",
        "mas",
        "o",
        "pero",
        "sus",
        "le",
        "ha",
        "me",
        "si",
        "sin",
        "sobre",
        "este",
        "ya",
        "entre",
        "cuando",
        "todo",
        "esta",
        "ser",
        "son",
        "dos",
        "tambien",
        "fue",
        "habia",
        "era",
        "muy",
        "hasta",
        "desde",
        "mi",
        "mis",
        "tu",
        "te",
        "tus",
        "que",
        "como",
        "cual",
        "puedo",
        "teneis",
        "haceis",
        "vuestro",
        "vuestra",
        "os",
        "nos",
        "hay",
    ]
)
# German, French, Italian and Portuguese function words, accents already removed.
_OTHER_STOP_WORDS = frozenset(
    """
    der die das den dem des ein eine einen einem einer ich du er sie es wir ihr mir mich
    ihnen ihre ihren ihrem ihr euch euer eure uns und oder aber ist sind bin bist war
    habe hat haben hast kann konnen koennen kannst wie was wo wann wer noch schon auch
    nicht kein keine mit von zu zum zur im in an am auf fur fuer bei nach aus um ob man
    bitte mal doch denn ja nein gibt es
    le la les l un une des du de d au aux je j tu il elle on nous vous ils elles me m te
    t se s mon ma mes ton ta tes son sa ses notre votre vos leur leurs et ou mais est
    suis es sont ai as a avez ont peux peut pouvez pour par avec dans sur en ce cet
    cette ces qui que qu quoi quel quelle quels quelles comment combien ne pas plus y
    il lo gli i una uno di da del della dei degli delle al alla ai agli alle nel nella
    io tu lui lei noi voi loro mi ti ci vi si mio mia miei mie tuo tua vostro vostra e
    ed o ma sono sei siete ho hai ha abbiamo avete hanno posso puoi potete per con su
    che chi cosa come quanto quanta quanti quante non piu
    o os as um uma uns umas do da dos das no na nos nas ao aos eu ele ela nos voces
    vos meu minha meus minhas seu sua seus suas vosso vossa e ou mas sou somos sao tem
    tenho temos teem posso pode podem para pra com em que quem qual quais como quanto
    quantos quanta nao mais ainda encore ancora still todavia
    """.split(),  # noqa: SIM905 - a word list reads better as text
)
_CHAT_FILLERS = frozenset({"u", "hey", "hi", "hello", "guys", "help", "please", "pls", "thanks"})
# When and where the customer is asking name no topic: "today" is in hours and delivery
# questions alike, and so are "when", "how much" and "where" in every language.
_TIME_AND_QUESTION_WORDS = frozenset(
    """today now tonight tomorrow hoy ahora manana heute jetzt morgen aujourd hui maintenant
    demain oggi adesso ora domani hoje agora amanha quand quando donde onde dove cuanto cuanta
    cuantos cuantas warum wieviel viele pourquoi perche porque""".split()  # noqa: SIM905
)
# Wanting, needing, doing and being name no topic either: "I'd like to", "comment je fais".
_WISH_AND_BE_WORDS = frozenset(
    """want wants like need would quiero quisiera queria quiere quieren necesito hago hacer
    estais estan estamos mochte moechte mochten will wollen brauche seid habt voudrais veux
    veut voulez veulent fais faire fait faut etes sommes vorrei voglio faccio
    fare serve quero quer querem faco fazer estao estamos preciso""".split()  # noqa: SIM905
)
# What people add to a chat message in every language: greetings, thanks, "please", elisions
# and the everyday function words the lists above miss.
_CHAT_WORDS = frozenset(
    """im ive dont didnt doesnt cant ur plz thx hola buenas gracias porfa favor eso esto esa
    ese algo alguien vosotros vuestros vuestras usted ustedes tengo tiene tienen puede pueden
    podeis hallo danke sich dass wenn weil als so nur sehr hier da dann gerade eure euren
    eurem vom beim ins durch uber bonjour salut merci svp stp c n ca cet moi toi lui tout tous
    toute aussi bien tres alors donc car chez ciao grazie dell dall nell sull all col sul
    sulla nei negli dai dalla dal fa sta sei essere avere ce ne anche gia pure tutto tutti
    questo questa quello quella qui qua ola oi obrigado obrigada pelo pela pelos pelas num
    numa isto isso este esse essa lhe ja foi ser estar vai""".split()  # noqa: SIM905
)
# scikit-learn's English list holds words that name a customer's topic ("call" us, money
# "back", a minimum "amount", get "off" a list): they stay.
_ENGLISH_TOPIC_WORDS = frozenset(
    """amount back bill call detail empty fill find fire first found front full give keep last
    made move name off part put serious show side system take thick thin top""".split()  # noqa: SIM905
)
STOP_WORDS = (
    (frozenset(ENGLISH_STOP_WORDS) - _ENGLISH_TOPIC_WORDS)
    | _SPANISH_STOP_WORDS
    | _OTHER_STOP_WORDS
    | _CHAT_FILLERS
    | _TIME_AND_QUESTION_WORDS
    | _WISH_AND_BE_WORDS
    | _CHAT_WORDS
)
_WORD = re.compile(r"\w+", re.UNICODE)
# Countries, as the six languages name them (accents removed): which one a customer names is
# no topic, that they name one is ("do you ship to Poland" is "do you ship to Spain"), so
# every name becomes one word before matching.
COUNTRY_WORDS = frozenset(
    """spain espana espagne spagna espanha spanien france francia frankreich franca germany
    alemania allemagne germania alemanha deutschland italy italia italie italien portugal
    portogallo poland polonia pologne polen austria autriche osterreich oesterreich
    switzerland suiza suisse svizzera suica schweiz belgium belgica belgique belgien belgio
    netherlands holland holanda hollande niederlande olanda ireland irlanda irlande irland
    norway noruega norvege norwegen norvegia sweden suecia suede schweden svezia denmark
    dinamarca danemark danimarca finland finlandia finnland greece grecia grece griechenland
    usa eeuu america canada kanada mexico messico mexiko brazil brasil bresil brasilien
    brasile argentina argentinien argentine colombia kolumbien colombie australia australien
    australie japan japon giappone japao morocco marruecos maroc marokko marocco marrocos
    angola mocambique mozambique luxembourg luxemburgo lussemburgo luxemburg hungary hungria
    ungarn ungheria hongrie romania rumania rumanien roumanie croatia croacia kroatien
    croatie croazia czechia tschechien uk england inglaterra angleterre inghilterra
    scotland escocia schottland ecosse scozia peru chile venezuela ecuador uruguay paraguay
    bolivia guatemala honduras nicaragua panama cuba india china turquia turkei tuerkei turquie
    turchia bulgaria bulgarie bulgarien eslovaquia slowakei slovaquie slovacchia slovakia slovenia
    eslovenia slowenien slovenie estonia estland estonie latvia letonia lettland lettonie
    lettonia lithuania lituania litauen lituanie cyprus chipre zypern chypre cipro malta malte
    iceland islandia islande islanda israel egypt egipto agypten egypte egitto""".split()  # noqa: SIM905
)
COUNTRY_WORD = "xcountry"
# Cities abroad name a destination abroad as a country does ("do you deliver to Oslo" is "do you
# deliver to Norway"); British ones, a place at home ("a shop in Leeds" is "a shop in London").
# Neither says which city is a topic: each kind reads as one word. Names that are also words
# ("Nice", "Bath", "Reading", "Porto" for German postage, "Lima", "Granada") are left out.
FOREIGN_CITY_WORDS = frozenset(
    """paris madrid barcelona valencia sevilla seville sevilha malaga bilbao zaragoza vigo
    lisboa lisbon lissabon lisbonne lisbona coimbra faro braga berlin berlino berlim munich
    munchen muenchen hamburg hambourg amburgo hamburgo koln koeln cologne frankfurt francfort
    francoforte stuttgart dusseldorf wien vienna vienne viena zurich zurigo geneva geneve genf
    ginevra ginebra genebra bern berne basel basilea roma rome rom milan milano mailand milao
    turin torino naples napoli neapel napoles florence firenze florenz florencia venice venezia
    venedig venise venecia veneza bologna genova palermo amsterdam amsterda rotterdam brussels
    bruxelles brussel bruselas bruxelas antwerp anvers amberes antwerpen namur liege charleroi
    copenhagen kopenhagen copenhague copenaghen stockholm estocolmo stoccolma oslo helsinki
    dublin dublino warsaw warschau varsovie varsovia varsavia prague prag praga budapest athens
    athen athenes atenas atene lyon lione marseille marsella marsiglia marselha toulouse
    bordeaux burdeos lille nantes strasbourg strassburg estrasburgo montpellier montreal
    quebec toronto vancouver singapore singapur singapour singapura dubai tokyo tokio toquio
    sydney melbourne auckland zealand zelande zelanda zelandia neuseeland mallorca majorca
    ibiza tenerife canarias canaries kanaren acores azores azoren madeira""".split()  # noqa: SIM905
)
HOME_CITY_WORDS = frozenset(
    """london londres londra manchester edinburgh edimburgo edimbourg glasgow birmingham leeds
    liverpool bristol cardiff belfast newcastle sheffield nottingham leicester brighton oxford
    cambridge aberdeen dundee inverness bolton coventry southampton portsmouth plymouth
    norwich exeter swansea luton""".split()  # noqa: SIM905
)
HOME_CITY_WORD = "xcity"


# Chat shorthand and the commonest misspellings, as their words: "hw long dose delivery take",
# "q hora abren", "vcs entregam", "ur pwd". Every form of a message (its vectors, keywords,
# key concepts and look-alike cues) reads the full words. A shorthand is spelt out in its own
# language only: "tt" is "tout" in French and "tutto" in Italian, "dose" a word in Portuguese
# and Italian, "wen" a word in German, "dev" English; only misspellings that are no word in
# any of the six languages are read in every one.
_ANY_LANGUAGE_SPELLINGS = {
    "pwd": "password", "pw": "password", "passwd": "password", "pword": "password",
    "pasword": "password", "acount": "account", "accout": "account", "shiping": "shipping",
    "delivey": "delivery", "delievery": "delivery", "delivry": "delivery", "recieve": "receive",
    "recieved": "received", "recive": "receive", "warrenty": "warranty", "cancle": "cancel",
}  # fmt: skip
CHAT_SPELLINGS: dict[str, dict[str, str]] = {
    "en": {
        "hw": "how", "dose": "does", "wat": "what", "wot": "what", "wen": "when", "whn": "when",
        "ur": "your", "acc": "account", "acct": "account", "addy": "address",
        "adress": "address", "adres": "address", "tmrw": "tomorrow", "tmr": "tomorrow",
        "2moro": "tomorrow", "wknd": "weekend", "ppl": "people", "pics": "photos",
        "garantee": "guarantee", "abt": "about", "b4": "before", "bc": "because",
        "coz": "because", "cuz": "because", "msg": "message", "msgs": "messages",
        "pkg": "package", "pkge": "package", "asap": "as soon as possible",
        "refound": "refund", "reimbursment": "reimbursement",
    },
    "es": {
        "q": "que", "k": "que", "xq": "porque", "pq": "porque", "tb": "tambien",
        "tmb": "tambien", "tmbn": "tambien", "dnd": "donde", "xa": "para", "pa": "para",
        "dev": "devolucion", "cdo": "cuando", "porfa": "por favor", "x": "por",
        "xfa": "por favor", "xfavor": "por favor", "msj": "mensaje", "msjs": "mensajes",
        "d": "de", "tmp": "tampoco", "rembolso": "reembolso", "reenbolso": "reembolso",
        "rembolsar": "reembolsar",
    },
    "de": {
        "gibts": "gibt es", "nen": "einen", "bissl": "bisschen", "ne": "eine", "ner": "einer",
        "nem": "einem", "is": "ist", "nich": "nicht", "net": "nicht", "nix": "nichts",
        "grad": "gerade", "hab": "habe", "kannste": "kannst du", "haste": "hast du",
        "lg": "liebe grusse", "vllt": "vielleicht", "evtl": "eventuell",
    },
    "fr": {
        "bjr": "bonjour", "slt": "salut", "cmd": "commande", "cde": "commande",
        "cmde": "commande", "pk": "pourquoi", "qd": "quand", "tt": "tout", "rdv": "rendez vous",
        "comande": "commande", "jai": "j ai", "jsuis": "je suis", "chuis": "je suis",
        "jpeux": "je peux", "jveux": "je veux", "jme": "je me", "jviens": "je viens",
        "pr": "pour", "ds": "dans", "vs": "vous", "bcp": "beaucoup", "mtn": "maintenant",
        "dsl": "desole", "jcommande": "je commande", "jsp": "je sais pas", "qqch": "quelque chose",
        "qqn": "quelqu un", "cmb": "combien", "cb": "carte bancaire",
    },
    "it": {
        "ke": "che", "k": "che", "cmq": "comunque", "xke": "perche", "xche": "perche",
        "pk": "perche", "nn": "non", "qnd": "quando", "x": "per", "tt": "tutto",
        "sn": "sono", "qlc": "qualche", "qlcs": "qualcosa", "dv": "dove", "msg": "messaggio",
    },
    "pt": {
        "vc": "voce", "vcs": "voces", "qdo": "quando", "qnd": "quando", "td": "tudo",
        "obg": "obrigado", "msm": "mesmo", "hj": "hoje", "pra": "para", "pro": "para o",
        "tbm": "tambem", "tb": "tambem", "oq": "o que", "q": "que", "pq": "porque",
        "qnt": "quanto", "qto": "quanto", "qnts": "quantos", "qts": "quantos",
        "dps": "depois", "n": "nao", "p": "para", "msgs": "mensagens", "msg": "mensagem",
        "cmg": "comigo",
    },
}  # fmt: skip
_SPELLINGS = {
    language: {**_ANY_LANGUAGE_SPELLINGS, **spellings}
    for language, spellings in CHAT_SPELLINGS.items()
}
# A message of no known language reads the shorthand of every language (the first listed
# wins where two differ).
_EVERY_SPELLING = {
    word: full
    for spellings in reversed(list(_SPELLINGS.values()))
    for word, full in spellings.items()
}
# German written without umlauts ("groesse", "Gebuehren") meets German written with them
# ("Größe", "Gebühren" read "grosse", "gebuhren") in the vectors, where "dauer" reading
# "daur" on both sides does no harm; the key concepts' patterns spell both ("gro(e)?ss") and
# read the words as typed.
_GERMAN_UMLAUT_SPELLING = re.compile(r"([aou])e")
# "p&p" (British for postage and packing) is no word for the tokeniser, which drops the letters.
_POSTAGE_AND_PACKING = re.compile(r"\bp ?(?:&|and|n) ?p\b")
# A letter typed three times or more is one typed twice: "sooo", "pleeease", "freeee".
_REPEATED_LETTER = re.compile(r"([^\W\d_])\1{2,}")
# German joins nouns into one word ("Versandgebühren", "Servicehotline", "Schuhgrösse"): a
# compound ending in one of these topic nouns reads that noun too, as a word of its own right
# after it, so "Versandgebühren" names the fees as "Gebühren" does. Nouns that head compounds
# of other topics are left out ("Steuernummer" is no phone number, "Geschenkkarte" no card to
# pay with, "Kundenkonto" in a newsletter question no account to delete).
_GERMAN_COMPOUND_HEADS = re.compile(
    r"\b(?:\w{3,}?)((?:kosten|geb(?:u|ue)hr|spesen|porto|dauer|frist|hotline|telefon|adresse"
    r"|anschrift|passwort|kennwort|gutschein|garantie|filiale|versand|lieferung|erstattung"
    r"|gro(?:e)?sse|geschaft)(?:n|en|e|s|es)?)\b"
)


# "Ordered half an hour ago", "pedí hace media hora", "vor einer Stunde bestellt": a time ago
# in hours or minutes says when something happened, not that the customer asks about the
# hours; in the vectors it reads as one word (the patterns still see the words).
_TIME_AGO = re.compile(
    r"\b(?:(?:hace|vor|il y a|faz|ha)(?: \w+){0,2} (?:horas?|stunden?|heures?|minut\w*|mins?)"
    r"|(?:(?:half )?an?|one|two|three|couple of|few|[0-9]+|mezz|un|una|mezza|due|tre|qualche)"
    r" (?:hours?|hrs?|mins?|minutes?|ore|ora|minuti) (?:ago|fa))\b"
)
TIME_AGO_WORD = "xrecently"


# Spanish and Italian join object pronouns to an infinitive or a gerund ("cancelarlo",
# "devolverla", "enviándolo", "annullarlo", "rimandarvelo"): the verb is read as the variants
# write it ("cancelar", "annullare"), the pronouns as the function words they are. Italian
# "si" and "ti" are left joined ("diversi" is no verb), and so is Spanish "-ernos" ("modernos").
_ENCLITICS: dict[str, tuple[re.Pattern[str], str]] = {
    "es": (
        re.compile(
            r"\b(?!\w*ernos\b)(\w{3,}?(?:ar|er|ir)|\w{2,}?(?:ando|iendo))"
            r"((?:me|te|se|nos|os)?(?:lo|la|los|las|le|les)|me|te|se|nos|os)\b"
        ),
        r"\1 \2",
    ),
    "it": (
        re.compile(
            r"\b(\w{3,}?(?:ar|er|ir))"
            r"((?:me|te|ce|ve|se|glie)(?:lo|la|li|le|ne)|lo|la|li|le|ne|mi|ci|vi|gli)\b"
        ),
        r"\1e \2",
    ),
}


# German splits a verb from its particle at the end of a clause ("die Mail kommt nie an",
# "wie schicke ich das zurück", "ich melde mich ab"): the joined verb is read too, right after
# the particle ("ankommen", "zuruckschicken", "abmelden"), as the variants and patterns write it.
# "zurück" is never a preposition; the other particles count at the end of a clause only.
_GERMAN_SEPARATED_VERB = re.compile(
    r"\b(?:(?P<stem>komm|schick|geb|ruf|meld|tausch|mach|nehm|hol|send|buch|zahl|bring|stell"
    r"|lad|seh|fall|guck|schau)(?:e|st|t|en|et|te|ten)?|(?P<irregular>kam|kamen|gibt|gab|nimmt"
    r"|nahm|sieht|sah|fallt|fiel|rief))\b(?:\s+\w+){0,6}?\s+(?:(?P<back>zuruck|zurueck)\b|(?P<particle>"
    r"an|ab|auf|um|aus|ein|nach|weiter)\b(?=\s*(?:$|[.,;:!?)]|(?:und|aber|oder|weil|wenn|dass|ob"
    r"|denn|bitte)\b)))"
)
_GERMAN_IRREGULAR_STEMS = {
    "kam": "komm", "kamen": "komm", "gibt": "geb", "gab": "geb", "nimmt": "nehm", "nahm": "nehm",
    "sieht": "seh", "sah": "seh", "fallt": "fall", "fiel": "fall", "rief": "ruf",
}  # fmt: skip


# Idioms built on the word for an account that name none: "me di cuenta" (I realised), "tener
# en cuenta", "je me suis rendu compte", "dei-me conta", "mi sono reso conto" read as a word
# for noticing.
_ACCOUNT_IDIOMS = {
    "es": re.compile(
        r"\b((?:di|dio|dimos|disteis|dieron|doy|das|da|damos|dan|dado|dar|darme|darse|darte"
        r"|dando|daba|daban|tener en|tenga en|tengan en|teniendo en) )cuenta\b"
    ),
    "fr": re.compile(
        r"\b((?:rendre|rends|rend|rendu|rendue|rendant|rendais|rendait|rendons|rendez|tenir|tiens"
        r"|tient|tenu|tenant|en fin de) )compte\b"
    ),
    "pt": re.compile(r"\b((?:dei|deu|demos|deram|dou|dar|dado|dando)(?: me)? )conta\b"),
    "it": re.compile(r"\b((?:reso|resa|resi|rese|rendo|rende|rendersi|rendermi) )conto\b"),
}
NOTICED_WORD = "notado"


def _joined_verb(found: re.Match[str]) -> str:
    stem = found["stem"] or _GERMAN_IRREGULAR_STEMS[found["irregular"]]
    return f"{found[0]} {found['back'] or found['particle']}{stem}en"


def base_language(language: str | None) -> str | None:
    """The language without its region: "es-MX" is "es", "pt_BR" "pt"."""
    return re.split(r"[-_]", language.lower(), maxsplit=1)[0] if language else None


def content_form(text: str, language: str | None = None) -> str:
    """``text`` lower-cased and without accents, every word kept (the chat shorthand of
    ``language``, or of every language when it is unknown, spelt out)."""
    language = base_language(language)
    spellings = _SPELLINGS.get(language, _EVERY_SPELLING) if language else _EVERY_SPELLING
    plain = _POSTAGE_AND_PACKING.sub("postage and packing", plain_text(text))
    if language == "de":
        plain = _GERMAN_SEPARATED_VERB.sub(_joined_verb, plain)
    words = _WORD.findall(_REPEATED_LETTER.sub(r"\1\1", plain))
    form = " ".join(spellings.get(word, word) for word in words)
    if language == "de":
        form = _GERMAN_COMPOUND_HEADS.sub(r"\g<0> \1", form)
    idiom = _ACCOUNT_IDIOMS.get(language) if language else None
    if idiom is not None:
        form = idiom.sub(rf"\g<1>{NOTICED_WORD}", form)
    return form


def content_words(text: str, language: str | None = None) -> str:
    """``text`` lower-cased, without accents and without function words (a time ago in hours
    or minutes read as one word, a verb's attached pronouns as words of their own)."""
    language = base_language(language)
    form = _TIME_AGO.sub(f" {TIME_AGO_WORD} ", content_form(text, language))
    enclitics = _ENCLITICS.get(language) if language else None
    if enclitics is not None:
        form = enclitics[0].sub(enclitics[1], form)
    words = [word for word in form.split() if word not in STOP_WORDS]
    if language == "de":
        words = [_GERMAN_UMLAUT_SPELLING.sub(r"\1", word) for word in words]
    return " ".join(_place(word) for word in words)


# A pattern in faq.yaml (a key concept, a look-alike, an unanswered cue) names "any country or
# city abroad" as ``{country}``: the loader puts the names the matcher reads as a country in its
# place, so the knowledge base keeps no list of its own to keep in step with these.
COUNTRY_PLACEHOLDER = "{country}"
_COUNTRY_ALTERNATION = (
    "(?:"
    + "|".join(sorted(COUNTRY_WORDS | FOREIGN_CITY_WORDS, key=lambda word: (-len(word), word)))
    + ")"
)


def expand_places(patterns: list[str]) -> list[str]:
    """``patterns`` with every ``{country}`` spelt out as the country and foreign city names."""
    return [pattern.replace(COUNTRY_PLACEHOLDER, _COUNTRY_ALTERNATION) for pattern in patterns]


# The knowledge base's patterns, ``{country}`` spelt out as they are loaded.
Patterns = Annotated[list[str], AfterValidator(expand_places)]


def _place(word: str) -> str:
    """``word``, or the one word its kind of place reads as (a country, a city abroad, a
    British city)."""
    if word in COUNTRY_WORDS or word in FOREIGN_CITY_WORDS:
        return COUNTRY_WORD
    return HOME_CITY_WORD if word in HOME_CITY_WORDS else word


class FaqEntry(BaseModel):
    """One question the bot can answer: its phrasings and its answer per language."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128, pattern=r"^[a-z0-9_.-]+$")
    questions: dict[str, list[str]] = Field(description="Language to question variants.")
    answers: dict[str, str] = Field(description="Language to answer.")
    keywords: list[str] = Field(
        default_factory=list,
        description="Words or phrases (any language) that name this entry's topic and no other's: "
        "'paypal', 'vat number'. A message holding one leans towards this entry.",
    )
    requires: Patterns = Field(
        default_factory=list,
        description="The entry's key concepts: patterns (regular expressions on the message "
        "lower-cased and without accents), each of which a message must match for this entry "
        "to answer it ('an address' for change-address: 'can I change my username' is not one; "
        "the delivery and a cost for shipping-cost).",
    )
    excludes: Patterns = Field(
        default_factory=list,
        description="Look-alikes next to this entry's topic that it does not answer: patterns "
        "(as requires) such as 'an expired gift card' or 'ordering by phone'. A message "
        "matching one is handed to a person rather than answered with this entry.",
    )
    topic: Literal["hours"] | None = Field(
        default=None,
        description="hours: the bot checks the business-hours calendar for the day asked about.",
    )

    @model_validator(mode="after")
    def _has_content(self) -> "FaqEntry":
        if not any(self.questions.values()):
            raise ValueError(f"FAQ entry {self.id!r} has no question")
        if not self.answers:
            raise ValueError(f"FAQ entry {self.id!r} has no answer")
        _check_patterns([*self.requires, *self.excludes], f"FAQ entry {self.id!r}")
        return self


class KnowledgeBase(BaseModel):
    """The FAQ knowledge base (``faq.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_language: str = "en"
    min_margin: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="How far the best entry must score above the runner-up (another entry or "
        "an unanswered question) for the bot to answer: a close call is a miss, not a guess.",
    )
    min_margin_unanswered: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="How far the best entry must score above a question the FAQ does not "
        "answer, when that is the runner-up (min_margin when unset, and when the message names "
        "every key concept the entry requires): a look-alike that scores close means the "
        "message is more likely the look-alike's kind of question.",
    )
    confirmed_threshold_discount: float = Field(
        default=0.0,
        ge=0.0,
        le=0.2,
        description="How much lower the score threshold is for an entry whose key concepts the "
        "message all names (the entry has at least one that is not a mere exclusion): naming "
        "them is evidence the wording alone does not give, so a customer who puts the question "
        "in other words than the variants is still answered.",
    )
    confirmed_unanswered_discount: float = Field(
        default=0.0,
        ge=0.0,
        le=0.2,
        description="How much less an unanswered question that does not name an entry's key "
        "concepts counts against a message that names them all: 'how long after my return "
        "arrives is the refund?' is less likely 'has my return arrived?' than the words say.",
    )
    min_answer_probability: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="How likely the answer check (a model trained on labelled customer "
        "messages, services/responder/answer_check.py) must find it that the best entry's answer "
        "settles the message for the bot to answer with it; below, a person answers at once "
        "(a look-alike next to the entry's topic). 0 turns the check off.",
    )
    unanswered_cues: Patterns = Field(
        default_factory=list,
        description="Topics no entry answers, as patterns (regular expressions on the message "
        "lower-cased and without accents): customs, the currency, a pickup point. A message "
        "naming one is handed to a person, however much it looks like an entry's question.",
    )
    unanswered: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Language to questions customers ask that look like FAQ ones but that no "
        "entry answers (jobs, stock, appointments): they compete with the entries and never win.",
    )
    entries: list[FaqEntry]

    @model_validator(mode="after")
    def _unique_ids_and_default_answers(self) -> "KnowledgeBase":
        seen: set[str] = set()
        for entry in self.entries:
            if entry.id in seen:
                raise ValueError(f"duplicate FAQ entry id {entry.id!r}")
            seen.add(entry.id)
            if self.default_language not in entry.answers:
                raise ValueError(
                    f"FAQ entry {entry.id!r} has no {self.default_language!r} (default) answer"
                )
        _check_patterns(self.unanswered_cues, "unanswered_cues")
        return self


def _check_patterns(patterns: list[str], owner: str) -> None:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"{owner}: bad pattern {pattern!r}: {error}") from error


def _compile_each(patterns: list[str]) -> tuple[re.Pattern[str], ...]:
    """``patterns`` compiled one by one, for :func:`_names_any`: searched in turn they are
    two to three times as fast as one alternation of them all (each keeps its own anchors
    and literal prefixes, and the search stops at the first that matches)."""
    return tuple(re.compile(pattern) for pattern in patterns)


def load_knowledge_base(path: Path | None = None) -> KnowledgeBase:
    """The knowledge base at ``path``, or the one packaged with dmdesk."""
    return parse_knowledge_base(packaged.read_text(DEFAULTS_PACKAGE, DEFAULT_FAQ_RESOURCE, path))


def parse_knowledge_base(text: str) -> KnowledgeBase:
    """The knowledge base whose YAML is ``text``."""
    return KnowledgeBase.model_validate(packaged.parse_yaml(text))


@dataclass(frozen=True, slots=True)
class FaqMatch:
    """The best entry for a question and how sure the retrieval is.

    ``score`` is the cosine similarity of the best entry (0..1); ``runner_up`` is the best
    score of anything else (another entry, or a question the FAQ does not answer) and
    ``runner_up_id`` names it (``None`` for an unanswered question). ``unanswered_topic``:
    the message names a topic no entry answers (customs, a pickup point), so it never answers.
    ``confirmed``: the message names every key concept of the entry (which has one that is not
    a mere exclusion), so the threshold is ``confirmed_threshold_discount`` lower and an
    unanswered question needs only ``min_margin`` to make a close call, not the wider
    ``min_margin_unanswered``.
    """

    entry: FaqEntry
    score: float
    runner_up: float = 0.0
    runner_up_id: str | None = None
    unanswered_topic: bool = False
    confirmed: bool = False
    words: str = ""
    """The message's content words (:func:`content_words`), for the answer check."""

    @property
    def margin(self) -> float:
        """How far the best entry is ahead (negative: an unanswered question scores higher)."""
        return self.score - self.runner_up

    def unanswered_wins(self, threshold: float) -> bool:
        """Whether a question the FAQ does not answer fits better, and fits well enough."""
        if self.unanswered_topic:
            return True
        return self.runner_up_id is None and self.runner_up >= max(threshold, self.score)

    def answer(self, language: str | None, default_language: str) -> str:
        """The answer in ``language`` when there is one, else in the default language."""
        answers = self.entry.answers
        if language and language in answers:
            return answers[language]
        return answers[default_language]


_UNANSWERED = -1
_Flags = np.ndarray[tuple[int], np.dtype[np.bool_]]
_Indices = np.ndarray[tuple[int], np.dtype[np.intp]]
_Weights = np.ndarray[tuple[int], np.dtype[np.float64]]
# A variant written in another language than the customer's counts a little less: "cancel"
# in an English question is closer to the English variants than to "cancelar".
_OTHER_LANGUAGE_WEIGHT = 0.9
# Where a message's sentences end, for finding the one question after a story.
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+|\n")
# A question asked without a question mark, as a wish or a request to be told ("I would need to
# know how I go about sending it back.", "Kindly advise me the procedure", "quisiera saber",
# "ich wüsste gern", "je voudrais savoir", "vorrei sapere", "gostaria de saber"): on the
# sentence's words in ``plain_text``.
_ASKED_INDIRECTLY = re.compile(
    r"\b(?:(?:i would|i d|i should|i will) (?:\w+ )?(?:like|need|love|want|be grateful|be obliged)"
    r"(?: \w+)? to (?:know|learn|find out|ask)|i would be (?:most |very )?grateful"
    r"|(?:kindly|please) (?:advise|let me know|tell me|inform me|confirm)|i was wondering"
    r"|i am wondering|i m wondering|(?:could|can|would) you (?:please )?(?:tell|let|advise) me"
    r"|(?:quisiera|queria|querria|necesito|me gustaria) saber|les agradeceria"
    r"|os agradeceria|(?:me )?(?:podrian|pueden|podeis) (?:decir|indicar|informar)"
    r"|ich (?:wusste|wuesste|hatte|haette) gerne?|ich mochte (?:gerne? )?wissen"
    r"|(?:konnten|koennten) sie mir (?:sagen|mitteilen)|teilen sie mir (?:bitte )?mit"
    r"|(?:je voudrais|j aimerais|je souhaiterais|je souhaite) savoir"
    r"|merci de (?:me dire|m indiquer|me preciser)|pourriez vous (?:me dire|m indiquer)"
    r"|(?:vorrei|gradirei|mi piacerebbe|volevo) sapere|(?:potreste|potete) (?:dirmi|indicarmi)"
    r"|(?:gostaria|queria|gostava) de saber|agradecia que me|(?:podem|poderiam) (?:dizer|informar))"
    r"\b"
)
# A keyword of an entry in the message raises that entry's score by this much (capped at 1).
_KEYWORD_BONUS = 0.15


def _keyword_pattern(keywords: list[str]) -> re.Pattern[str] | None:
    # Keywords are written in full words: no shorthand of one language may rewrite a word of
    # another's ("heures d ouverture" keeps its "d", which Spanish chat writes for "de").
    words = sorted(
        {" ".join(_WORD.findall(plain_text(keyword))) for keyword in keywords} - {""},
        key=len,
        reverse=True,
    )
    if not words:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(word) for word in words) + r")\b")


def _names(pattern: re.Pattern[str] | None, text: str) -> bool:
    """Whether ``text`` names one of the keywords ``pattern`` stands for."""
    return pattern is not None and pattern.search(text) is not None


def _names_any(patterns: tuple[re.Pattern[str], ...], text: str) -> bool:
    """Whether one of ``patterns`` (:func:`_compile_each`) matches ``text``."""
    return any(pattern.search(text) for pattern in patterns)


_PARTS = ("words", "chars")


class TextFeatures:
    """Word 1-2-gram and character 3-5-gram TF-IDF (sublinear term counts), each part and the
    whole l2-normalised: fitted on a corpus of ``content_words`` texts, then read one text at a
    time by :meth:`query`, which is what scikit-learn's ``transform`` gives (a unit test checks
    it) at a fifteenth of the cost for one text."""

    def __init__(self, char_min_df: int = 1) -> None:
        self._words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        self._chars = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=char_min_df
        )
        self._analysers: list[tuple[Callable[[str], list[str]], dict[str, int], _Weights]] = []

    def fit_transform(self, texts: list[str]) -> csr_matrix:
        """Fit on ``texts`` and return their rows."""
        rows = normalize(
            hstack([self._words.fit_transform(texts), self._chars.fit_transform(texts)])
        ).tocsr()
        self._analysers = [
            (vectoriser.build_analyzer(), vectoriser.vocabulary_, vectoriser.idf_)
            for vectoriser in (self._words, self._chars)
        ]
        return rows

    def fitted(self) -> dict[str, np.ndarray[tuple[int], np.dtype[Any]]]:
        """What the fit learnt, as arrays (for a cache): each part's terms by column, its idf."""
        arrays: dict[str, np.ndarray[tuple[int], np.dtype[Any]]] = {}
        for name, (_, vocabulary, idf) in zip(_PARTS, self._analysers, strict=True):
            arrays[f"{name}_terms"] = np.asarray(sorted(vocabulary, key=vocabulary.__getitem__))
            arrays[f"{name}_idf"] = idf
        return arrays

    @classmethod
    def from_fitted(
        cls, arrays: Mapping[str, np.ndarray[tuple[int], np.dtype[Any]]], char_min_df: int = 1
    ) -> "TextFeatures":
        """Features that :meth:`query` as the fitted ones whose :meth:`fitted` gave ``arrays``
        (:meth:`transform`, scikit-learn's own path, needs a fit)."""
        features = cls(char_min_df)
        features._analysers = [
            (
                vectoriser.build_analyzer(),
                {str(term): column for column, term in enumerate(arrays[f"{name}_terms"])},
                np.asarray(arrays[f"{name}_idf"], dtype=np.float64),
            )
            for name, vectoriser in zip(_PARTS, (features._words, features._chars), strict=True)
        ]
        return features

    def transform(self, texts: list[str]) -> csr_matrix:
        """The rows of ``texts`` as scikit-learn computes them (for tests and tools)."""
        return normalize(hstack([self._words.transform(texts), self._chars.transform(texts)]))

    def query(self, text: str) -> tuple[_Indices, _Weights]:
        """The features ``text`` names and their weights: its row of :meth:`transform`."""
        indices: list[_Indices] = []
        weights: list[_Weights] = []
        offset = 0
        for analyse, vocabulary, idf in self._analysers:
            counts = Counter(vocabulary[term] for term in analyse(text) if term in vocabulary)
            if counts:
                found = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
                tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
                weight = (1.0 + np.log(tf)) * idf[found]  # sublinear tf times idf, l2-normed
                indices.append(found + offset)
                weights.append(weight / np.sqrt(weight @ weight))
            offset += len(vocabulary)
        if not indices:
            return np.empty(0, dtype=np.intp), np.empty(0)
        joined = np.concatenate(weights)
        return np.concatenate(indices), joined / np.sqrt(joined @ joined)


class FaqIndex:
    """TF-IDF (word 1-2 grams + character 3-5 grams) cosine retrieval over every variant.

    An entry scores its best variant (a variant in the customer's language counts in full,
    others a little less), plus a bonus when the message names one of its keywords. The
    knowledge base's unanswered questions are scored the same way and only compete.
    """

    def __init__(self, knowledge_base: KnowledgeBase, check: "AnswerCheck | None" = None) -> None:
        self.knowledge_base = knowledge_base
        documents: list[str] = []
        owners: list[int] = []
        languages: list[str] = []
        for position, entry in enumerate(knowledge_base.entries):
            for language, variants in entry.questions.items():
                documents += variants
                owners += [position] * len(variants)
                languages += [language] * len(variants)
        for language, variants in knowledge_base.unanswered.items():
            documents += variants
            owners += [_UNANSWERED] * len(variants)
            languages += [language] * len(variants)
        self._owners = np.asarray(owners)
        self._languages = np.asarray(languages)
        self._keywords = [_keyword_pattern(entry.keywords) for entry in knowledge_base.entries]
        self._requires = [
            [re.compile(pattern) for pattern in entry.requires] for entry in knowledge_base.entries
        ]
        # A concept written as an exclusion alone ("^(?!...)": no refund named) is not named
        # by a message; an entry with only such concepts is never confirmed by one.
        self._named_concepts = [
            [c for c in concepts if not c.pattern.startswith("^(?!")] for concepts in self._requires
        ]
        self._exclusion_concepts = [
            [c for c in concepts if c.pattern.startswith("^(?!")] for concepts in self._requires
        ]
        self._excludes = [_compile_each(entry.excludes) for entry in knowledge_base.entries]
        self._unanswered_cue = _compile_each(knowledge_base.unanswered_cues)
        # An unanswered question naming an entry's keyword ("can I use two gift cards") gets
        # the same lean as the entry when the message names it too: a look-alike on the
        # entry's topic competes on equal terms.
        unanswered_texts = [
            content_form(text, language)
            for text, language in zip(
                np.asarray(documents)[self._owners < 0],
                self._languages[self._owners < 0],
                strict=True,
            )
        ]
        self._unanswered_keywords = np.asarray(
            [[_names(pattern, text) for text in unanswered_texts] for pattern in self._keywords],
            dtype=bool,
        ).reshape(len(self._keywords), len(unanswered_texts))
        # Per entry, the unanswered questions that name its key concepts: the look-alikes of
        # that entry ("a second-hand warranty" for warranty), as against questions about
        # something else that share a word with a message ("has my return arrived?" with "how
        # long after my return arrives is the refund?").
        self._unanswered_of = np.asarray(
            [
                [
                    bool(concepts) and all(c.search(text) for c in concepts)
                    for text in unanswered_texts
                ]
                for concepts in self._requires
            ],
            dtype=bool,
        ).reshape(len(self._requires), len(unanswered_texts))
        self.features = TextFeatures()
        texts = [
            content_words(text, language)
            for text, language in zip(documents, languages, strict=True)
        ]
        # The variants' unit vectors, by column: a question names a few hundred of the tens
        # of thousands of features, and the variants' scores are those columns times the
        # question's weights.
        self._by_feature = self.features.fit_transform(texts).tocsc()
        self._check = check

    def _variant_scores(
        self, question: str, words: str, language: str | None, unconcerned: _Flags
    ) -> _Weights:
        """Every variant's similarity to ``question``, whose content words are ``words`` (a
        variant in another language than the customer's a little less). A message that tells a
        story and asks one question ("I bought a throw last week... it's still in its
        packaging. How do I send it back?") is diluted by the story: when the question alone
        and the whole message agree on the entry that fits best, that entry's variants score
        the better of the two. Only entries whose key concepts the message names (not
        ``unconcerned``) can lead: a story's words ("the lamp I bought") must not pick an entry
        that cannot answer and so void the agreement."""
        scores = self._similarities(words, language)
        sentences = [part for part in _SENTENCE_END.split(question.strip()) if part.strip()]
        asked = [
            part
            for part in sentences
            if part.rstrip().endswith("?")
            or _ASKED_INDIRECTLY.search(" ".join(_WORD.findall(plain_text(part))))
        ]
        if len(sentences) < 2 or len(asked) != 1:
            return scores
        alone = self._similarities(content_words(asked[0], language), language)
        entry_variants = self._owners >= 0
        entry_variants[entry_variants] = ~unconcerned[self._owners[entry_variants]]
        if not entry_variants.any():
            return scores
        leader = self._owners[np.argmax(np.where(entry_variants, scores, -1.0))]
        if self._owners[np.argmax(np.where(entry_variants, alone, -1.0))] != leader:
            return scores
        return np.where(self._owners == leader, np.maximum(scores, alone), scores)

    def _similarities(self, words: str, language: str | None) -> _Weights:
        """Every variant's cosine similarity to the text whose content words
        (:func:`content_words`) are ``words``, a variant in another language than the
        customer's counting a little less."""
        features, weights = self.features.query(words)
        # The named columns' entries, gathered straight from the CSC arrays and summed per
        # variant: the matrix product scipy's column indexing would give, without its
        # per-call validation (a tenth of a search).
        matrix = self._by_feature
        starts, ends = matrix.indptr[features], matrix.indptr[features + 1]
        lengths = ends - starts
        offsets = starts - np.cumsum(lengths) + lengths
        gather = np.arange(lengths.sum()) + np.repeat(offsets, lengths)
        scores: _Weights = np.bincount(
            matrix.indices[gather],
            weights=matrix.data[gather] * np.repeat(weights, lengths),
            minlength=matrix.shape[0],
        ).astype(np.float64, copy=False)
        if language is not None:
            scores = np.where(self._languages == language, scores, scores * _OTHER_LANGUAGE_WEIGHT)
        return scores

    def answers(self, match: FaqMatch | None, threshold: float) -> bool:
        """Whether the bot may answer with ``match``: above ``threshold``, clear of rivals, and
        not refused by the answer check."""
        return self.clears(match, threshold) and not self.refuses(self.settles(match))

    def settles(self, match: FaqMatch | None) -> float | None:
        """How likely the answer check finds it that ``match``'s entry settles the message
        (None without a check, or for an entry it has no labelled message of)."""
        if match is None or self._check is None or not self.knowledge_base.min_answer_probability:
            return None
        return self._check.probability(match.words, match.entry.id)

    def refuses(self, settles: float | None) -> bool:
        """Whether the answer check's probability ``settles`` is too low to answer."""
        return settles is not None and settles < self.knowledge_base.min_answer_probability

    def clears(self, match: FaqMatch | None, threshold: float) -> bool:
        """Whether ``match`` is above ``threshold`` and clear of rivals (the retrieval's say)."""
        if match is None or match.unanswered_topic:
            return False
        knowledge_base = self.knowledge_base
        if match.confirmed:
            threshold -= knowledge_base.confirmed_threshold_discount
        if match.score < threshold:
            return False
        margin = knowledge_base.min_margin
        if (
            match.runner_up_id is None
            and knowledge_base.min_margin_unanswered is not None
            and not match.confirmed
        ):
            margin = knowledge_base.min_margin_unanswered
        return match.margin >= margin

    def search(self, question: str, language: str | None = None) -> FaqMatch | None:
        """The best-scoring entry for ``question`` (None for an empty question or a greeting
        alone), read without the greetings it opens with."""
        question = without_greeting(question)
        language = base_language(language)
        words = content_words(question, language)
        if not words:
            return None
        plain = content_form(question, language)
        # An entry whose key concepts the message does not all name cannot answer; it still
        # competes as a rival unless the best entry's own key concepts are all named. A
        # look-alike an entry excludes counts as an unanswered question scoring as the entry
        # did, so a close call hands the message to a person.
        unconcerned, confirmed, look_alike = self._outside(plain)
        scores = self._variant_scores(question, words, language, unconcerned)
        entries = self.knowledge_base.entries
        by_entry = np.zeros(len(entries))
        np.maximum.at(by_entry, self._owners[self._owners >= 0], scores[self._owners >= 0])
        named = np.asarray([_names(pattern, plain) for pattern in self._keywords], dtype=bool)
        by_entry = np.minimum(1.0, by_entry + _KEYWORD_BONUS * named)
        unanswered_scores = scores[self._owners == _UNANSWERED]
        # The lean goes with the keywords of entries that could answer: "Rücksendung" in a
        # question about the refund's timing (which returns does not answer) gives "has my
        # return arrived?" no lean over refund-time.
        if (named & ~unconcerned).any():
            leaning = self._unanswered_keywords[named & ~unconcerned].any(axis=0)
            unanswered_scores = np.minimum(1.0, unanswered_scores + _KEYWORD_BONUS * leaning)
        rivals = np.where(look_alike, 0.0, by_entry)
        best = int(np.argmax(np.where(unconcerned, 0.0, rivals)))
        best_score = 0.0 if unconcerned[best] else float(rivals[best])
        if confirmed[best]:
            rivals = np.where(unconcerned, 0.0, rivals)
            # A message naming the entry's key concepts is less likely an unanswered question
            # that does not name them (it shares other words with the message).
            elsewhere = unanswered_scores - self.knowledge_base.confirmed_unanswered_discount
            unanswered_scores = np.where(self._unanswered_of[best], unanswered_scores, elsewhere)
        unanswered = float(unanswered_scores.max(initial=0.0))
        if look_alike.any():
            unanswered = max(unanswered, float(by_entry[look_alike].max()))
        rivals[best] = -1.0
        runner_up, runner_up_id = unanswered, None
        if len(entries) > 1 and rivals.max() >= unanswered:
            second = int(np.argmax(rivals))
            runner_up, runner_up_id = float(rivals[second]), entries[second].id
        topic = _names_any(self._unanswered_cue, plain)
        return FaqMatch(
            entries[best], best_score, runner_up, runner_up_id, topic, bool(confirmed[best]), words
        )

    def _outside(self, plain: str) -> tuple[_Flags, _Flags, _Flags]:
        """Per entry, for the message (``content_form``): it misses one of the entry's key
        concepts; it names every one (and the entry has one that is not a mere exclusion); it
        is a look-alike.

        Each entry's patterns are searched only as far as these need: its named concepts until
        one is named and one is not, its exclusion concepts only when every named one is, its
        exclusions only when the message is on its topic (most messages are on one or two
        entries' topics; the patterns are most of a search's time).
        """
        count = len(self._requires)
        unconcerned = np.ones(count, dtype=bool)
        confirmed = np.zeros(count, dtype=bool)
        look_alike = np.zeros(count, dtype=bool)
        for position, (named, exclusions, excludes) in enumerate(
            zip(self._named_concepts, self._exclusion_concepts, self._excludes, strict=True)
        ):
            any_named, all_named = False, True
            for concept in named:
                if _names(concept, plain):
                    any_named = True
                else:
                    all_named = False
                if any_named and not all_named:
                    break
            if all_named and all(_names(concept, plain) for concept in exclusions):
                unconcerned[position] = False
                confirmed[position] = bool(named)
            # A look-alike is on the entry's topic (it names one of its key concepts, when it
            # has any that is not a mere exclusion) and asks something next to it the answer
            # does not give: a message about something else that shares an excluded word ("my
            # return arrived" with cancel-order's "return") is no look-alike of it.
            on_topic = any_named or not named
            look_alike[position] = on_topic and _names_any(excludes, plain)
        return unconcerned, confirmed, look_alike
