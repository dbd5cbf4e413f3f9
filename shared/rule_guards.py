"""Guards on what the bot says and to whom (no framework)."""

import functools
import re
import unicodedata
from collections.abc import Iterable

# Wording a customer-care bot must not send: offers, discounts, calls to buy. Meta's
# policy forbids promotional content in replies sent under RESPONSE/HUMAN_AGENT.
DEFAULT_PROMOTIONAL_PATTERNS = (
    r"\b\d{1,2}\s?% off\b",
    r"\bdiscount(s|ed)?\b",
    r"\bpromo(tion(al)?)?\s?codes?\b",
    r"\bcoupons?\b",
    r"\b(limited[- ]time|special) offer\b",
    r"\bbuy now\b",
    r"\bsale ends\b",
    r"\bfree gift\b",
    r"\bdescuento\b",
    r"\boferta\b",
    r"\bpromoci[oó]n\b",
)

# Whole messages that ask the bot to stop (or to come back), as people write them in the
# six supported languages; polite fillers around them ("stop please") do not count.
DEFAULT_OPT_OUT_WORDS = (
    # en
    "stop", "stop it", "stop bot", "stop the bot", "stop messages", "stop messaging me",
    "stop texting me", "unsubscribe", "unsub", "opt out", "optout", "quit",
    "no more messages", "leave me alone",
    # es
    "baja", "darme de baja", "dar de baja", "parar", "para", "basta", "no más mensajes",
    "no quiero más mensajes", "cancelar suscripción",
    # de
    "stopp", "abmelden", "abbestellen", "austragen", "keine nachrichten mehr", "aufhören",
    "hör auf",
    # fr
    "arrêt", "arret", "arrête", "arrêter", "arretez", "arrêtez", "désabonner",
    "me désabonner", "désabonnez-moi", "désabonne-moi", "désinscription", "se désinscrire",
    "désinscrivez-moi", "plus de messages",
    # it
    "basta messaggi", "disiscrivimi", "annulla iscrizione", "cancellami", "non scrivermi più",
    "smettila",
    # pt
    "pare", "parem", "sair", "descadastrar", "não quero mais mensagens",
    "chega",
)  # fmt: skip
DEFAULT_OPT_IN_WORDS = (
    "start", "unstop", "resume", "start bot", "subscribe",  # en
    "alta", "empezar", "iniciar", "volver",  # es
    "anmelden", "weiter", "fortsetzen",  # de
    "reprendre", "démarrer", "demarrer", "recommencer",  # fr
    "riprendi", "inizia", "ricomincia",  # it
    "começar", "comecar", "voltar", "retomar",  # pt
)  # fmt: skip
POLITE_FILLERS = (
    "please", "pls", "plz", "now", "thanks", "thank you", "por favor", "porfa", "ya", "gracias",
    "bitte", "danke", "sofort", "s il vous plaît", "s il vous plait", "svp", "merci",
    "per favore", "grazie", "obrigado", "obrigada", "agora", "ok", "okay",
    # acknowledgements before a thanks or a command: "vale, muchas gracias", "ok stop"
    "great", "perfect", "vale", "perfecto", "genial", "super", "parfait", "d accord",
    "perfetto", "va bene", "perfeito", "otimo",
)  # fmt: skip

# Whom a short message is addressed to: "hi there", "thanks guys", "hola a todos".
ADDRESS_WORDS = (
    "there", "all", "everyone", "everybody", "guys", "team", "folks", "a todos", "equipo",
    "chicos", "zusammen", "leute", "ihr lieben", "tout le monde", "l équipe",
    "l equipe", "à tous", "a tous", "a tutti", "ragazzi", "pessoal", "equipa", "gente",
    "à vous", "a vous", "a voi", "a vocês", "a voces", "to you", "to you all", "to all",
    "people", "y all", "amigos", "chicas", "ihr", "euch", "miteinander", "mitenand",
    "les gens", "la team", "madame", "monsieur", "messieurs dames", "à toute l équipe",
    "a toute l equipe", "raga", "ragazze", "galera", "malta",
    # round 15: a letter's formal address, "Buongiorno, gentile servizio clienti"
    "sir", "madam", "sir or madam", "dear sir or madam", "over there", "señores",
    "estimados señores", "señoras y señores", "tengan ustedes", "a ustedes",
    "damen und herren", "sehr geehrte damen und herren", "mesdames messieurs",
    "mesdames et messieurs", "servizio clienti", "gentile servizio clienti", "staff",
    "lo staff", "a tutto lo staff", "senhores", "estimados senhores", "caros senhores",
    "prezados senhores",
    # round 23: "Hello dear, good day to you"
    "dear",
)  # fmt: skip
# Words joining two greetings: "salve e buon pomeriggio", "hola y buenas tardes".
JOINERS = frozenset({"and", "y", "e", "und", "et"})
# "Again" after a greeting, back in the conversation: "hi again 👋", "Moin nochmal!",
# "buenas tardes de nuevo" (never a greeting alone: "again?" asks something).
AGAIN_WORDS = (
    "again", "once again", "de nuevo", "otra vez", "nochmal", "nochmals", "wieder",
    "de nouveau", "encore", "di nuovo", "ancora", "outra vez", "de novo", "novamente",
)  # fmt: skip

_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)

# Greetings a message opens with before its question: "Boa tarde, ...", "Hi, good evening,
# ...". The FAQ reads a message without them: "tarde" or "evening" there asks nothing about
# the opening hours. (Words that also name a time alone, "morning", are left in.)
GREETING_OPENINGS = (
    "hi", "hello", "hey", "hiya", "heya", "howdy", "good morning", "good afternoon",
    "good evening", "hola", "buenas", "buenos dias", "buenas tardes", "buenas noches", "hallo",
    "guten tag", "guten morgen", "guten abend", "moin", "servus", "gruss gott", "gruezi",
    "bonjour", "bonsoir", "salut", "coucou", "ciao", "salve", "buongiorno", "buonasera",
    "buona sera", "buon pomeriggio", "buondi", "ola", "oi", "bom dia", "boa tarde", "boa noite",
)  # fmt: skip


def _alternatives(words: Iterable[str]) -> str:
    return "|".join(re.escape(plain_text(word)) for word in sorted(words, key=len, reverse=True))


def plain_text(text: str) -> str:
    """``text`` lower-cased, without accents, curly apostrophes straightened, "ß" as "ss".

    Customers often type without accents ("donde esta mi pedido", "dov'e") and Swiss and
    many other keyboards have no "ß" ("Grösse", "Strasse"): keywords and commands are matched
    on this form of both sides.
    """
    lowered = text.lower().replace("\u2019", "'").replace("ß", "ss")
    decomposed = unicodedata.normalize("NFKD", lowered)
    if decomposed.isascii():
        return decomposed
    return "".join(char for char in decomposed if not unicodedata.combining(char))


_FILLERS = _alternatives(POLITE_FILLERS)
_LEADING_FILLERS = re.compile(rf"^(?:(?:{_FILLERS})\s+)+")
_TRAILING_FILLERS = re.compile(rf"(?:\s+(?:{_FILLERS}))+$")
_TRAILING_ADDRESS = re.compile(rf"(?:\s+(?:{_alternatives(ADDRESS_WORDS)}))+$")


_GREETING_OPENING = re.compile(
    rf"^[\W_]*(?:(?:(?:{_alternatives(JOINERS)})\s+)?(?:{_alternatives(GREETING_OPENINGS)})"
    rf"(?:\s+(?:{_alternatives(ADDRESS_WORDS)}))*(?![\w'])[\W_]*)+"
)


def without_greeting(text: str) -> str:
    """``text`` in :func:`plain_text` form without the greetings it opens with ("boa
    tarde, era possivel..." reads "era possivel..."); empty for a greeting alone."""
    return _GREETING_OPENING.sub("", plain_text(text), count=1)


def compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """Case-insensitive compiled patterns."""
    return tuple(re.compile(pattern, re.IGNORECASE) for pattern in patterns)


def promotional_match(text: str, patterns: Iterable[re.Pattern[str]]) -> str | None:
    """The promotional wording found in ``text``, or None."""
    for pattern in patterns:
        if match := pattern.search(text):
            return match.group(0)
    return None


def normalised_command(text: str | None) -> str:
    """A short message reduced to plain lower-case words, polite fillers around it removed.

    "Stop please!", "STOP 🙏" and "por favor, baja" all read as the command word; "hi
    there", "thanks guys" and "ok thanks" as "hi" and "thanks" (whom it is addressed to,
    and an acknowledgement before it, are dropped).
    """
    words = " ".join(_PUNCTUATION.sub(" ", plain_text(text or "").replace("_", " ")).split())
    addressed = _TRAILING_ADDRESS.sub("", words) or words
    # The leading pattern keeps the last word: a message of fillers only ("ok thanks") reads
    # as its last one ("thanks").
    stripped = _LEADING_FILLERS.sub("", addressed)
    return _TRAILING_FILLERS.sub("", stripped) or stripped


# A letter typed twice or more in a row, read once: "hellooo", "buenaaas", "ciaooo" and
# "oiii" are compared with the phrases read the same way ("hallo" as "halo").
_REPEATED_LETTER = re.compile(r"([^\W\d_])\1+")


def _squeezed(text: str) -> str:
    return _REPEATED_LETTER.sub(r"\1", text)


@functools.lru_cache(maxsize=64)
def _squeezed_phrases(phrases: frozenset[str]) -> frozenset[str]:
    """``phrases`` with each run of a repeated letter read once (once per rule set)."""
    return frozenset(_squeezed(phrase) for phrase in phrases)


# What may follow a greeting of a sequence: whom it addresses ("ciao ragazzi, buonasera"), a
# joining word ("salve e buon pomeriggio"), "again" ("hi again").
_BETWEEN_GREETINGS = JOINERS | {
    " ".join(plain_text(word).split()) for word in (*ADDRESS_WORDS, *AGAIN_WORDS)
}


def is_phrase_sequence(command: str, phrases: frozenset[str]) -> bool:
    """Whether ``command`` (normalised) is one of ``phrases`` or several in a row.

    "hola buenos dias", "hey hey", "moin moin", "salve e buon pomeriggio", "ciao ragazzi,
    buonasera" and "hi again" are greetings as much as "hola"; a word with a letter drawn out
    ("hellooo", "buenaaas") counts as itself.
    """
    words = command.split()
    squeezed = _squeezed_phrases(phrases)
    reachable = {0}
    for start in range(len(words)):
        if start not in reachable:
            continue
        if start:
            for end in range(start + 1, min(start + 6, len(words) + 1)):
                if " ".join(words[start:end]) in _BETWEEN_GREETINGS:
                    reachable.add(end)
        for end in range(start + 1, len(words) + 1):
            piece = " ".join(words[start:end])
            if piece in phrases or _squeezed(piece) in squeezed:
                reachable.add(end)
    return bool(words) and len(words) in reachable


# A short message that starts by asking to stop and names the messages is an opt-out too:
# "please stop sending me these messages", "dejad de mandarme mensajes", "keine Nachrichten
# mehr". One that names emails or the newsletter is a newsletter question, for the FAQ.
STOP_OPENINGS = (
    "stop", "stopp", "quit", "no more", "dont send", "don t send", "do not send", "enough",
    "deja de", "dejad de", "dejen de", "para de", "parad de", "paren de", "no quiero",
    "no me mandeis", "no me mandes", "no me envieis", "no me enviéis", "no mas", "basta",
    "hort auf", "hoert auf", "horen sie auf", "aufhoren", "schickt mir keine", "keine weiteren",
    "arrete", "arretez", "arreter", "plus de", "ne m envoyez plus", "assez",
    "smettete", "smettetela", "smettila", "non voglio", "non mandatemi", "non mi mandate",
    "non scrivetemi", "parem", "pare de", "deixem de", "deixa de", "nao quero",
    "nao me mandem", "nao me enviem", "chega de",
    # the wish not to hear from the page any more: "don't want any more DMs", "no me
    # escribáis más", "merci de ne plus m'écrire", "quero deixar de receber mensagens"
    "dont want", "don t want", "do not want", "i dont want", "i don t want", "i do not want",
    "can you not", "could you not",
    "no me escribais", "no me escribas", "no me escriban", "quitadme de", "quitame de",
    "ich mochte keine", "ich will keine", "schreibt mir", "schreiben sie mir",
    "ne plus m", "de ne plus m", "je ne veux plus", "je veux plus", "ne m ecrivez plus",
    "toglietemi da", "non voglio piu", "non scrivetemi", "non scrivermi",
    "quero deixar de", "nao me escrevam", "tirem me de", "deixem de me",
)  # fmt: skip
MESSAGE_WORDS = (
    "message", "messages", "messaging", "text", "texts", "texting", "dm", "dms", "dming",
    "msg", "msgs", "mensaje", "mensajes", "mensajitos", "escribirme", "nachricht",
    "nachrichten", "nachrichte", "schreiben", "messaggi", "messaggio", "scrivermi", "mensagem",
    "mensagens", "escrever", "messagerie", "messageries",
    "write", "writing", "escribais", "escribas", "escriban", "schreibt", "ecrire", "ecrivez",
    "scrivetemi", "scrivere", "escrevam", "escrevem", "anschreiben", "anzuschreiben",
    "angeschrieben",
    # a business or a family writes for all of them: "no longer contact us", "scriverci"
    "escribirnos", "scriverci", "scriveteci",
    # being contacted: "deixem de me contactar", "stop contacting me"
    "contact", "contacting", "contacted", "contactar", "contactarme", "contactame",
    "contactarnos", "contacteis", "contacten", "kontaktieren", "kontaktiert", "kontakt",
    "contacter", "contactez", "contacte", "contactee", "contattare", "contattarmi",
    "contattatemi", "contattarci", "contattateci", "contattato", "contattata", "contatar",
    "contatem", "contactem",
    "contactado", "contactada", "contatado", "contatada",
)  # fmt: skip
# Where the messages come: a DM channel, not the e-mail the newsletter uses.
CHANNEL_WORDS = (
    "chat", "bot", "whatsapp", "whatsapps", "insta", "instagram", "messenger", "facebook",
    "direct", "inbox", "dms", "dm", "on here", "this page", "this account", "canal", "channel",
    "kanal", "privado", "prive", "en prive", "privat", "por aqui", "por este medio", "este chat",
    "diesen kanal", "account", "konto", "compte", "profilo", "perfil", "pagina", "page", "seite",
)  # fmt: skip
# Asking, anywhere in a message, not to be written to any more: an opt-out when the message
# also names the messages or the channel (above). Verb forms are the imperative and the
# wish ("no me mandéis", "don't contact me", "nicht mehr anschreiben", "ne plus me
# contacter", "non voglio più essere contattato", "não quero ser contactada"), never a
# statement about what happened ("no me han enviado el mensaje").
OPT_OUT_PATTERNS = (
    # en ("what time do you stop answering messages" asks the hours: answering, replying or
    # reading the messages is the page's, not messages to the customer)
    r"\b(?:stop|quit|cease)\s+(?:(?!(?:answer|repl|respond|read|check)\w*\b)\w+\s+)?"
    r"(?:messag|text|dm|contact|writ|send|spam|slid|hitt)\w*",
    r"\b(?:don t|dont|do not|never)\s+(?:\w+\s+){0,2}?(?:contact|message|text|dm|write)\w*"
    r"\s+(?:me|us)\b",
    r"\b(?:don t|dont|do not)\s+want\s+(?:to\s+(?:get|receive)\s+)?any\s+more\b",
    r"\b(?:opt\s?(?:me\s+)?out|unsubscribe|unsub|take me off|remove me)\b",
    r"\brather not (?:get|receive|be)\b",
    # "I would be grateful if you would no longer send me messages on WhatsApp"
    r"\bno\s+longer\s+(?:\w+\s+){0,2}?(?:send|contact|messag|text|writ)\w*",
    # the polite forms: "would you mind not sending me any more messages"
    r"\b(?:mind|rather)\s+not\s+(?:\w+\s+){0,2}?(?:send|contact|messag|text|writ|receiv|get)\w*",
    r"\bno\s+(?:more|further)\s+(?:\w+\s+)?(?:messages|texts|dms)\b",
    # es
    # the subjunctive of a wish too: "os agradecería que no me enviarais más mensajes"
    r"\bno\s+(?:me\s+|nos\s+)?(?:\w+\s+)?(?:(?:mand|envi|contact|molest)(?:eis|es|en|arais|aran|aseis|asen)|escrib(?:ais|as|an|ierais|ieran))\b",
    # "que no me vuelvan a escribir", "que no me volvieran a enviar mensajes"
    r"\bno\s+(?:me\s+)?(?:vuelv|volv)\w*\s+a\s+(?:mandar|enviar|escribir|contactar)",
    # "no quiero que me lleguen mensajes", "no quiero q me escriba más el bot"
    r"\bno\s+quiero\s+(?:que|q)\s+(?:me\s+)?(?:\w+\s+)?(?:lleg|escrib|mand|envi|contact)\w*",
    r"\b(?:deja|dejad|dejen|dejar|dejaran|dejasen|dejarais|dejaseis|para|parad|paren|parar)\s+(?:de|d)\s+(?:\w+\s+)?(?:mandar|enviar|escribir|contactar)",
    r"\bno\s+quiero\s+(?:recibir\s+)?(?:\w+\s+){0,2}?(?:mas|mensajes|nada)\b",
    r"\b(?:borradme|borrame|quitadme|quitame|sacadme|sacame|darme de baja|dadme de baja)\b",
    # de
    r"\bkei(?:ne)?\s+(?:weiteren\s+)?(?:\w+\s+)?(?:nachrichten?|nachrichte|dms|messages|mitteilungen)\b",
    r"\b(?:schickt|schicken sie|sendet|senden sie)\s+mir\b.*\bnichts\s+mehr\b",
    r"\bnicht\s+mehr\b.*\b(?:kontaktier|anschreib|anzuschreib|angeschrieb|schreib)\w*",
    # "nicht mehr" closing the request, or before where ("... nicht mehr an", "nicht mehr auf
    # WhatsApp"): "schreiben Sie uns, ob die Lampe nicht mehr lieferbar ist" asks something
    r"\b(?:kontaktiert|schreibt|kontaktieren sie|schreiben sie)\s+(?:mich|uns)\b.*\bnicht\s+mehr"
    r"(?:\s+(?:an|hier|per|uber|ueber|auf|via|in|im|unter)\b.*)?$",
    r"\b(?:hort|hoert|horen sie)\s+auf\s+(?:\w+\s+){0,3}?(?:\w*schreib|schick|nachricht|kontakt)",
    # the request's infinitive: "könnt ihr aufhören, mir zu schreiben"
    r"\b(?:aufhoren|aufhoeren)\s+(?:\w+\s+){0,4}?(?:\w*schreib|schick|kontakt)\w*",
    r"\b(?:tragt|tragen sie)\s+mich\s+aus\b|\bnichts\s+mehr\s+per\b",
    r"\bmich\s+(?:\w+\s+){0,4}in\s+ruhe\b",
    # fr
    r"\bne\s+plus\s+(?:me|m|nous)\s+(?:\w+\s+)?(?:contact|ecri|envoy)\w*",
    r"\bne\s+m\s+(?:ecrivez|envoyez|contactez)\s+plus\b",
    r"\b(?:arretez|arrete|arreter|arretiez|cessez|cesse|cesser|cessiez)\s+de\s+(?:me\s+|m\s*)?(?:en\s+)?(?:ecrire|envoyer|contacter|spammer)",
    r"\bj?(?:e\s+)?(?:ne\s+)?(?:veux|souhaite|desire)\s+plus\s+(?:\w+\s+){0,2}?(?:recevoir|etre\s+contacte)",
    r"\b(?:desinscrivez|desabonnez|desinscris|desabonne)\s*moi\b",
    r"\b(?:lachez|retirez|laissez)\s+moi\b|\bme\s+(?:laisser\s+tranquille|retirer\s+de)\b",
    # it
    r"\bnon\s+(?:voglio|desidero)\s+(?:piu\s+)?(?:\w+\s+){0,2}?(?:essere\s+(?:ri)?contattat|ricevere)",
    r"\b(?:non|nn)\s+(?:\w+\s+)?(?:invia|manda|scriv|contatta)\w*\s+piu\b",
    r"\b(?:toglietemi|toglimi|cancellatemi|levatemi)\b",
    # the request's infinitive too: "potete smettere di scrivermi su questo numero?"
    r"\b(?:smettete|smettetela|smettila|smettere|smetterla|basta)\s+(?:di\s+)?(?:\w+\s+)?(?:scriver|mandar|inviar|contattar)",
    r"\b(?:non|nn)\s+(?:mi\s+|ci\s+)?(?:scrivete|scrivetemi|scriveteci|contattate|contattatemi|contattateci|mandate|inviate)\s+piu\b",
    # pt
    r"\b(?:nao|n)\s+quero\s+mais\s+(?:\w+\s+)?(?:mensage\w*|msgs?|nada)\b",
    r"\bnao\s+(?:quero|desejo)\s+(?:\w+\s+){0,2}?(?:ser\s+contact|ser\s+contat|receber\s+(?:mais|mensage|msg|nada))",
    r"\b(?:para|pare|parem|parar|pararem|parassem|deixem|deixa|deixe|deixar|deixarem|deixassem)\s+de\s+(?:me\s+|nos\s+)?(?:mandar|enviar|escrever|contactar|contatar)",
    r"\b(?:me\s+tira|tira\s+me|tirem\s+me|me\s+tirem)\b",
    # enough of the messages, anywhere: "já chega de mensagens no whatsapp", "basta con los
    # mensajes", "genug Nachrichten", "assez de messages", "basta messaggi", "enough messages"
    r"\b(?:chega|basta|enough|genug|assez)\s+(?:de\s+|di\s+|con\s+|with\s+|mit\s+|of\s+)?(?:(?:the|los|las|den|les|i|as|os|these|estos|estas|diesen|ces|questi|estas|essas)\s+)?(?:mensagens|msgs|mensajes|messaggi|messages|nachrichten|texts|dms)\b",
    # the number taken off the list: "tirem o meu número da vossa lista", "take my number off
    # your list", "quitad mi número de la lista"
    r"\b(?:tirem|tire|tira|retirem|apaguem|remove|take|delete|quitad|quitar|quiten|borrad|borren|entfernt|streicht|retirez|supprimez|togliete|cancellate|rimuovete)\s+(?:(?:o|my|mi|mein|meine|meinen|mon|il)\s+)?(?:meu\s+|mio\s+)?(?:number|numero|nummer|telefono|telefone)\s+(?:\w+\s+){0,3}?(?:lista|list|liste|listas|lists)\b",
)
_NEWSLETTER_WORDS = re.compile(
    r"\b(?:e ?mails?|newsletters?|correos?|boletin|mails?|courriels?|emails?)\b"
)
_ANY_FILLER = re.compile(rf"\b(?:{_FILLERS})\b")
_STOP_OPENING = re.compile(rf"^(?:{_alternatives(STOP_OPENINGS)})\b")
_MESSAGE_WORD = re.compile(rf"\b(?:{_alternatives(MESSAGE_WORDS)})\b")
_CHANNEL_WORD = re.compile(rf"\b(?:{_alternatives(CHANNEL_WORDS)})\b")
_OPT_OUT_PATTERN = re.compile("|".join(f"(?:{pattern})" for pattern in OPT_OUT_PATTERNS))
STOP_REQUEST_MAX_WORDS = 10
# A sentence ends at a full stop, a question or exclamation mark or a semicolon followed by
# a space (not at "3.95" or "m.in").
_SENTENCE_END = re.compile(r"[.!?;]+(?:\s+|$)")
OPT_OUT_SENTENCE_MAX_WORDS = 30
# A chat channel named as such (not the e-mail the newsletter uses): a message that names one
# and asks, in a sentence that names no e-mail or newsletter, to stop the messages opts out of
# them though it names the newsletter elsewhere ("Not the email newsletter, I mean these
# WhatsApp messages. Please stop sending them", "keine Nachrichten mehr im Messenger. Den
# Newsletter will ich behalten").
_CHAT_CHANNEL = re.compile(
    r"\b(?:whatsapp|whatsapps|messenger|insta|instagram|facebook|dm|dms|sms|on here|this number"
    r"|hier im|por aqui|por aca|por este (?:chat|medio)|nesta conversa|ici)\b"
)
# Where such a message is read clause by clause: the stop and the newsletter are often one
# sentence ("Arrêtez de m'envoyer des messages sur Instagram, la newsletter par mail ça va").
_CLAUSE_END = re.compile(r"[.!?;,:\u2013\u2014]+(?:\s+|$)|\s+(?:but|pero|aber|mais|ma|mas)\s+")
_THIS_NUMBER = re.compile(
    r"\b(?:this (?:number|phone)|este (?:numero|telefono|movil|telemovel|celular)"
    r"|diese (?:nummer|handynummer)|ce numero|questo numero)\b"
)


def asks_to_stop_messages(text: str | None) -> bool:
    """Whether a message asks for no more messages in a sentence rather than a word: a
    short one that opens by asking to stop and names the messages, or one that asks not to
    be written to (any form of :data:`OPT_OUT_PATTERNS`) and names the messages or the
    channel; never one about e-mails or the newsletter (the FAQ answers those), unless the
    message names a chat channel and a clause naming no e-mail or newsletter asks to stop."""
    core = _core_words(text or "")
    if _NEWSLETTER_WORDS.search(core) is not None:
        return _CHAT_CHANNEL.search(core) is not None and any(
            _NEWSLETTER_WORDS.search(clause) is None
            and _asks_not_to_write(clause, _CHAT_CHANNEL, _THIS_NUMBER)
            for clause in _parts(text or "", _CLAUSE_END)
        )
    if (
        len(core.split()) <= STOP_REQUEST_MAX_WORDS
        and _MESSAGE_WORD.search(core) is not None
        and _STOP_OPENING.search(core)
    ):
        return True
    # The request may close a longer message, after the story of how the messages came
    # ("I wrote to you once about a delivery ... Kindly stop sending me messages here"):
    # each sentence is read on its own, the whole message if it is short enough.
    return any(
        _asks_not_to_write(sentence) for sentence in (core, *_parts(text or "", _SENTENCE_END))
    )


def _asks_not_to_write(sentence: str, *named: re.Pattern[str]) -> bool:
    """Whether one sentence (plain words) is short, asks not to be written to (any form of
    :data:`OPT_OUT_PATTERNS`) and names the messages, the channel or one of ``named``."""
    return (
        len(sentence.split()) <= OPT_OUT_SENTENCE_MAX_WORDS
        and any(words.search(sentence) for words in (_MESSAGE_WORD, _CHANNEL_WORD, *named))
        and _OPT_OUT_PATTERN.search(sentence) is not None
    )


def _parts(text: str, boundary: re.Pattern[str]) -> list[str]:
    """``text`` split at ``boundary``, each part as plain words (:func:`_core_words`)."""
    return [_core_words(part) for part in boundary.split(text)]


def _core_words(text: str) -> str:
    """``text`` as plain words, polite fillers removed."""
    words = " ".join(_PUNCTUATION.sub(" ", plain_text(text)).split())
    return " ".join(_ANY_FILLER.sub(" ", words).split())


def is_command(text: str | None, words: Iterable[str]) -> bool:
    """Whether the whole message is one of ``words`` ("STOP", "stop.", " Stop!")."""
    command = normalised_command(text)
    return bool(command) and command in _commands(tuple(words))


@functools.lru_cache(maxsize=64)
def _commands(words: tuple[str, ...]) -> frozenset[str]:
    """``words`` normalised, once per rule set (it was a tenth of the responder's CPU)."""
    return frozenset(normalised_command(word) for word in words)
