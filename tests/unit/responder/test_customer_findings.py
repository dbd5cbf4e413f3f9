"""What customers met (issue #15): each finding as the decision the bot must now make."""

from datetime import UTC, datetime, timedelta

import pytest

from services.responder.decide import apply_decision
from services.responder.state import ConversationState
from shared.events import Category, CriticalSignal, PrivateInfoKind
from shared.rule_templates import greeting_name
from shared.rules import compile_rule_set, load_rule_set_document
from tests.unit.responder.helpers import classified, run


def test_abusive_complaint_in_category_other_goes_to_complaints_without_a_faq_answer() -> None:
    decision = run(
        classified(
            "YOU ARE IDIOTS, THE WORST COMPANY EVER", category=Category.OTHER, complaint=True
        )
    )
    assert decision.faq is None
    assert decision.handoff is not None
    assert decision.handoff.team == "complaints"
    assert decision.handoff.signals == ["complaint"]
    assert "sorry to hear" in decision.replies[0].text


def test_strongly_negative_message_is_not_answered_by_the_faq() -> None:
    decision = run(classified("what are your opening hours you useless lot", sentiment=-0.8))
    assert decision.faq is None
    assert decision.handoff is not None
    assert decision.handoff.signals == ["sentiment:-0.80"]


@pytest.mark.parametrize("signal", list(CriticalSignal))
def test_critical_signals_go_to_a_person_before_any_faq(signal: CriticalSignal) -> None:
    decision = run(classified("What are your opening hours?", critical=[signal]))
    assert decision.faq is None
    assert decision.handoff is not None
    assert decision.handoff.priority == "urgent"
    assert decision.handoff.signals == [f"critical:{signal.value}"]


@pytest.mark.parametrize("signal", list(CriticalSignal))
def test_a_critical_dm_gets_no_bot_message_not_even_an_acknowledgement(
    signal: CriticalSignal,
) -> None:
    decision = run(
        classified(
            "La stufa ha preso fuoco, ecco la mia carta [card]",
            language="it",
            critical=[signal],
            masked=[PrivateInfoKind.CARD],
        )
    )
    assert decision.replies == []
    assert decision.handoff is not None
    assert not decision.handoff.acknowledge
    assert decision.handoff.priority == "urgent"


def test_nothing_more_from_the_bot_after_a_critical_hand_off() -> None:
    first = classified("I can't go on", critical=[CriticalSignal.PERSON_AT_RISK], language="de")
    state = ConversationState()
    apply_decision(state, first, run(first, state=state))
    later = classified(
        "What are your opening hours?",
        mid="m-2",
        language="de",
        at=first.message.platform_ts + timedelta(minutes=5),
    )
    decision = run(later, state=state)
    assert decision.replies == []
    assert decision.silent_reason == "a human has taken the conversation"


def test_a_team_can_give_critical_dms_an_acknowledgement_in_its_live_rules() -> None:
    document = load_rule_set_document()
    [rule] = [rule for rule in document["rules"] if rule["id"] == "person-at-risk"]
    rule["then"].insert(0, {"reply": "person_at_risk_ack"})
    decision = run(
        classified("I can't go on", critical=[CriticalSignal.PERSON_AT_RISK], language="de"),
        rules=compile_rule_set(document),
    )
    [reply] = decision.replies
    assert reply.language == "de"
    assert "Mensch aus unserem Team" in reply.text


@pytest.mark.parametrize(
    ("text", "language", "category", "entry"),
    [
        ("What is your returns policy?", "en", Category.REFUND_BILLING, "returns"),
        ("Which payment methods do you accept?", "en", Category.REFUND_BILLING, "payment-methods"),
        ("Do you sell gift cards?", "en", Category.ORDER_SHIPPING, "gift-cards"),
        ("Wie funktioniert die Rücksendung?", "de", Category.REFUND_BILLING, "returns"),
        ("What is your VAT number?", "en", Category.INQUIRY, "company-details"),
        ("How do I cancel my newsletter subscription?", "en", Category.INQUIRY, "newsletter"),
    ],
)
def test_faq_answers_whatever_the_category_in_the_customers_language(
    text: str, language: str, category: Category, entry: str
) -> None:
    decision = run(classified(text, language=language, category=category))
    assert decision.faq is not None
    assert decision.faq.entry_id == entry
    assert decision.faq.answered
    assert decision.replies[0].language == language


def test_christmas_day_hours_question_gets_the_holiday_answer() -> None:
    decision = run(classified("Are you open on Christmas Day?"))
    assert "closed on Friday 25 December" in decision.replies[0].text
    # The calendar answers for the day asked about, not the entry's weekly hours: the answer
    # check, which judges whether the entry's own answer settles a message, is not asked.
    assert decision.faq is not None
    assert (decision.faq.entry_id, decision.faq.settles) == ("opening-hours", None)
    assert any("the answer check is not asked" in line for line in decision.trace)


def test_the_answer_check_judges_an_hours_question_about_an_ordinary_day() -> None:
    decision = run(classified("Are you open on Saturday?"))
    assert decision.faq is not None
    assert decision.faq.answered
    assert decision.faq.settles is not None


@pytest.mark.parametrize(
    ("text", "language", "words"),
    [
        ("agent please", "en", "passing this to a colleague"),
        ("quiero hablar con una persona", "es", "Le paso tu mensaje"),
        ("Ich möchte mit einem Menschen sprechen", "de", "weiter"),
    ],
)
def test_a_request_for_a_person_gets_a_hand_off_message_in_their_language(
    text: str, language: str, words: str
) -> None:
    decision = run(classified(text, language=language))
    assert decision.handoff is not None
    [reply] = decision.replies
    assert (reply.kind, reply.language) == ("handoff_ack", language)
    assert words in reply.text


def test_hand_off_message_outside_hours_says_when_the_team_is_back() -> None:
    # Saturday 20:00 in London: back Monday at 09:00.
    at = datetime(2026, 11, 28, 20, 0, tzinfo=UTC)
    decision = run(classified("agent please", at=at))
    assert "Monday 30 November at 09:00" in decision.replies[-1].text


def test_image_only_message_is_acknowledged() -> None:
    decision = run(classified("", category=Category.OTHER))
    assert decision.handoff is not None
    assert "attachment" in decision.replies[0].text


def test_greeting_gets_a_greeting_and_no_empty_name() -> None:
    decision = run(classified("hi", name=None))
    assert [reply.text for reply in decision.replies] == ["Hi! How can we help you today?"]


def test_portuguese_ta_is_not_a_thanks() -> None:
    state = ConversationState(messages_seen=1, bot_turns=1)
    decision = run(classified("o link não tá funcionando", language="pt"), state=state)
    assert decision.close is None


def test_thanks_after_an_answer_closes_politely() -> None:
    state = ConversationState(messages_seen=1, bot_turns=1)
    decision = run(classified("thanks!"), state=state)
    assert decision.close is not None
    assert decision.handoff is None
    assert decision.replies[0].text.startswith("You're welcome")


@pytest.mark.parametrize(
    "text",
    [
        "stop please",
        "STOP 🙏",
        "Unsubscribe.",
        "bitte abmelden",
        "please stop sending me these messages",
        "dejad de mandarme mensajes",
        "hört bitte auf, mir Nachrichten zu schicken",
        "Désinscrivez-moi s'il vous plaît",
        "désabonne-moi",
        "I don't want messages from you any more",
        "no me escribas más por favor",
        "ne m'écrivez plus ici",
        "quero deixar de receber as vossas mensagens",
        "please stop contacting me on here",
        "deixem de me contactar, obrigado",
        # asked anywhere in the sentence, naming the messages or the channel
        "ok can u stop sliding into my dms w promos pls i never signed up for this",
        "unsubscribe me from these whatsapp messages pls",
        "no me contactéis más por este chat",
        "kontaktiert mich bitte nicht mehr über diesen Kanal",
        "Stopp. Keine weiteren Nachrichten bitte.",
        "merci de ne plus me contacter par Messenger, je ne suis pas intéressée",
        "non voglio più essere contattata da questo profilo, grazie",
        "não quero ser contactada por este canal",
    ],
)
def test_opt_out_as_people_write_it_is_confirmed(text: str) -> None:
    decision = run(classified(text))
    assert decision.opt_out == "out"
    assert decision.replies[0].kind == "opt_out"


@pytest.mark.parametrize(
    "text",
    [
        "how do I stop getting your newsletter emails",
        "I don't want the emails, just the texts about my order",
        "stop, I never got a confirmation email for my order",
        "the delivery driver's messages stopped, where is my parcel? it has been two weeks now",
        "can I stop my order? I got a text saying it ships tomorrow",
        "no me han enviado el mensaje de confirmación del pedido",
        "I don't know why I got a message saying it was delivered",
        "unsubscribe me from the newsletter emails please",
        "no quiero recibir el pedido en mi casa, os lo dije por whatsapp",
        "não quero receber a encomenda nesta morada, já disse no chat",
        "hört auf mit den Verzögerungen, wo ist mein Paket? schon 3 Nachrichten geschrieben",
        # "nicht mehr" said of something else in a request to write
        "Bitte schreiben Sie uns, ob die Lampe nicht mehr lieferbar ist",
        "Schreiben Sie mich bitte an, falls der Artikel nicht mehr verfügbar ist",
    ],
)
def test_a_sentence_about_emails_or_an_order_is_not_an_opt_out(text: str) -> None:
    assert run(classified(text)).opt_out is None


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("hola buenos días", "es"),
        ("buenas noches!", "es"),
        ("Buona sera a tutti", "it"),
        ("hellooo", "en"),
        ("Moin moin", "de"),
        ("ciao a tutti", "it"),
        ("good evening all", "en"),
        ("buon pomeriggio a tutti", "it"),
        ("Hallöchen!", "de"),
        ("hola, ¿qué tal?", "es"),
        ("hello and good morning to you", "en"),
        ("ciao e buonasera", "it"),
        ("hallo zusammen, guten Abend", "de"),
        # familiar forms, "how are you", "anyone there?", whom it addresses, emoji
        ("hey, how's it going", "en"),
        ("holiii 😊", "es"),
        ("buen día, cómo andan?", "es"),
        ("Hey, hallo ihr 👋", "de"),
        ("slt slt, ça va ? 👋", "fr"),
        ("Bonjour madame, monsieur", "fr"),
        ("uè ciao ragazzi", "it"),
        ("Oiê, tudo joia?", "pt"),
        ("e aí gente, beleza?", "pt"),
        # a letter drawn out inside the word, back in the conversation
        ("buenaaas 👋", "es"),
        ("hello again!", "en"),
        ("Guten Morgen nochmal", "de"),
        ("Rebonjour, c'est encore moi", "fr"),
        ("ciao di nuovo", "it"),
        ("Boa tarde, sou eu de novo 🙂", "pt"),
        # a good day wished, good wishes, where the customer writes from
        ("Buongiorno a tutti e buona domenica.", "it"),
        ("Hola, buen domingo!", "es"),
        ("Hi all, have a lovely weekend", "en"),
        ("Bonjour et bon week-end !", "fr"),
        ("Good morning, hope all is well with you all", "en"),
        ("Moin aus Köln! 👋", "de"),
        ("Buongiorno, spero stiate tutti bene", "it"),
        ("Hello dear, good day to you", "en"),
    ],
)
def test_greetings_in_a_row_drawn_out_or_addressed_get_a_greeting(text: str, language: str) -> None:
    decision = run(classified(text, language=language))
    assert [reply.template for reply in decision.replies] == ["greeting"]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("hey, how's it going? do you ship to Ireland?", "en"),
        ("buen día, cómo andan? tienen tienda en Madrid?", "es"),
        ("oie gente, vocês entregam no sábado?", "pt"),
        # "again" follows a greeting; alone it asks something
        ("again?", "en"),
        ("otra vez", "es"),
        # good wishes or a place before a question
        ("Hi, hope you're well. What are your hours on Saturday?", "en"),
        ("Hola desde Sevilla, ¿cuánto tarda un pedido?", "es"),
        # "hope you have ..." with no word of being well asks for something
        ("Hi, I hope you have the blue duvet in stock", "en"),
        ("Hallo, ich hoffe ihr habt die Decke noch in Grau", "de"),
    ],
)
def test_a_greeting_with_a_question_is_a_question(text: str, language: str) -> None:
    decision = run(classified(text, language=language))
    assert not {"greeting", "greeting-wishes"} & set(decision.matched_rules)


@pytest.mark.parametrize(
    ("text", "closes"),
    [
        ("much appreciated", True),
        ("muito obrigada pela ajuda", True),
        ("obrigadinha!", True),
        ("thanks but it still doesn't work", False),
        ("thanks, and where is my order?", False),
        ("thanks for the quick reply yesterday about my parcel and the refund", False),
        # familiar, drawn out, or saying the answer helped
        ("ah brilliant, ta", True),
        ("ah trop bien merciii 🫶", True),
        ("brigado, fiquei esclarecido 👍", True),
        ("ah ok c'est clair, merci beaucoup !", True),
        ("Perfekt, vielen Dank für die schnelle Antwort", True),
        ("ok that helps, can I also change the size?", False),
        ("merci, et pour la commande 48213 ?", False),
        ("grazie, però non ho ancora ricevuto il rimborso", False),
    ],
)
def test_a_short_thanks_after_an_answer_closes_and_a_thanks_with_more_does_not(
    text: str, closes: bool
) -> None:
    state = ConversationState(messages_seen=1, bot_turns=1)
    decision = run(classified(text), state=state)
    assert (decision.close is not None) is closes


@pytest.mark.parametrize(
    "text",
    [
        "is there anyone there I can chat to",
        "¿me puede atender alguien del equipo?",
        "can you put me through to customer services",
        "could I talk to your supervisor",
        "quiero hablar con el encargado de la tienda",
        "Ich möchte bitte mit einem Vorgesetzten sprechen",
    ],
)
def test_a_request_for_a_person_in_a_sentence_is_handed_off(text: str) -> None:
    decision = run(classified(text))
    assert "human-request-phrased" in decision.matched_rules
    assert decision.handoff is not None
    assert [reply.kind for reply in decision.replies] == ["handoff_ack"]


@pytest.mark.parametrize(
    "text",
    [
        "why was my payment declined?",
        "Hi, why is my refund smaller than the order?",
        "pourquoi ma commande a été annulée ?",
    ],
)
def test_a_why_question_goes_to_a_person_not_the_faq(text: str) -> None:
    decision = run(classified(text))
    assert decision.matched_rules == ["why-question"]
    assert decision.faq is None
    assert decision.handoff is not None


def test_start_brings_the_bot_back_after_an_opt_out() -> None:
    state = ConversationState()
    stop = classified("stop please", mid="m-stop")
    apply_decision(state, stop, run(stop, state=state))
    start = classified("start", mid="m-start")
    decision = run(start, state=state)
    assert decision.opt_out == "in"
    assert decision.replies[0].kind == "opt_in"
    apply_decision(state, start, decision)
    answer = run(classified("What are your opening hours?", mid="m-3"), state=state)
    assert answer.faq is not None
    assert answer.faq.answered


def test_card_details_get_a_warning_in_the_customers_language_and_the_rest_goes_on() -> None:
    decision = run(
        classified(
            "Quels moyens de paiement acceptez-vous ?", language="fr", masked=[PrivateInfoKind.CARD]
        )
    )
    assert decision.replies[0].text.startswith("Pour votre sécurité")
    assert decision.faq is not None
    assert decision.faq.entry_id == "payment-methods"
    assert decision.replies[1].language == "fr"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Dr. Hans Müller", "Hans"), ("🌸 mia 🌸", "Mia"), ("", None), ("🌸", None), (None, None)],
)
def test_greeting_name_skips_titles_and_emoji(name: str | None, expected: str | None) -> None:
    assert greeting_name(name) == expected


def test_no_template_reads_thanks_space_bang_for_a_nameless_contact() -> None:
    decision = run(classified("qwerty plugh", name="🌸"))
    assert "Thanks !" not in decision.replies[0].text
    assert decision.replies[0].text.startswith("Thanks!")


@pytest.mark.parametrize(
    ("text", "language", "stock"),
    [
        ("do you still have the black boots in a 39?", "en", True),
        ("ainda têm o casaco azul?", "pt", True),
        ("my kettle is 18 months old, do I still have a guarantee?", "en", False),
    ],
)
def test_still_having_an_item_is_a_stock_question_and_still_having_a_warranty_is_not(
    text: str, language: str, stock: bool
) -> None:
    decision = run(classified(text, language=language))
    assert ("stock-question" in decision.matched_rules) is stock


@pytest.mark.parametrize(
    "text",
    [
        "could a member of staff look at this instead of the bot",
        "I want a reply from a person, not a bot",
        "podem passar-me a um assistente por favor",
        # a colleague, someone real, a call back
        "oye, me pasas con un compañero tuyo?",
        "Können Sie mich bitte an einen Kollegen aus Fleisch und Blut weiterleiten?",
        "Kann mich bitte jemand zurückrufen?",
        "y a quelqu'un de réel au bout ou c'est un robot ?",
        "preferia falar com um colaborador vosso, pode ser?",
    ],
)
def test_asking_for_staff_or_not_a_bot_is_a_request_for_a_person(text: str) -> None:
    decision = run(classified(text))
    assert "human-request" in decision.matched_rules
    assert decision.handoff is not None


@pytest.mark.parametrize(
    "text",
    [
        "Is there anyone on the chat on a Saturday around 1pm?",
        "vorrei fare un buono regalo per il compleanno di una collega, come si compra?",
        "impossible de me rappeler mon mot de passe, comment le récupérer ?",
    ],
)
def test_a_colleague_a_chat_or_remembering_is_not_a_request_for_a_person(text: str) -> None:
    decision = run(classified(text))
    assert not {"human-request", "human-request-phrased"} & set(decision.matched_rules)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Good evening! is delivery to Portugal possible?", "en"),
        ("Boa tarde, vocês enviam para a Suíça?", "pt"),
    ],
)
def test_a_greeting_before_a_question_is_not_read_as_an_hours_question(
    text: str, language: str
) -> None:
    decision = run(classified(text, language=language, category=Category.ORDER_SHIPPING))
    assert decision.faq is not None
    assert decision.faq.entry_id == "international-shipping"
    assert decision.faq.answered


# Round 12 (issue 20): the customer's own case told as a story and chased, polite greetings
# and opt-outs, and look-alikes the answers do not settle (written apart from the eval set).
@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("I was charged delivery on a 70 pound basket, why?", "en"),
        ("la spedizione me l'avete fatta pagare lo stesso, come mai?", "it"),
        ("apaguei a conta e continuo a receber sms vossos. Porquê?", "pt"),
    ],
)
def test_a_why_question_closing_a_story_goes_to_a_person(text: str, language: str) -> None:
    decision = run(classified(text, language=language))
    assert decision.matched_rules == ["why-question"]
    assert decision.faq is None


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("asked for a replacement ten days ago and still nothing", "en"),
        ("mandei as fotos da avaria há uma semana e nada", "pt"),
        ("Reklamation vor drei Wochen geschickt und nichts passiert", "de"),
    ],
)
def test_a_case_chased_with_nothing_yet_goes_to_a_person(text: str, language: str) -> None:
    decision = run(classified(text, language=language))
    assert decision.matched_rules == ["nothing-yet"]
    assert decision.faq is None
    assert decision.handoff is not None


def test_a_general_question_after_nothing_yet_stays_the_faqs() -> None:
    decision = run(
        classified("ordered on friday and nothing yet, how long does delivery usually take?")
    )
    assert "nothing-yet" not in decision.matched_rules


def test_a_well_wishing_sentence_with_its_subject_greets() -> None:
    decision = run(classified("Good afternoon, I hope you are all well."))
    assert "greeting" in decision.matched_rules
    assert decision.faq is None


# Round 15: a letter's formal address and well-wishing around the greeting.
@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Good evening, dear Sir or Madam. I hope this message finds you well.", "en"),
        ("Buenas tardes, estimados señores, espero que todo esté bien.", "es"),
        ("Guten Abend, sehr geehrte Damen und Herren!", "de"),
        ("Bonsoir mesdames et messieurs, j'espère que vous passez une bonne journée", "fr"),
        ("Buonasera a tutto lo staff, buona settimana!", "it"),
        ("Boa noite, caros senhores, espero que esteja tudo bem por aí.", "pt"),
    ],
)
def test_a_greeting_with_a_formal_address_or_good_wishes_greets(text: str, language: str) -> None:
    decision = run(classified(text, language=language))
    assert "greeting" in decision.matched_rules
    assert decision.faq is None


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Would you mind not sending me any more messages on Instagram, please?", "en"),
        ("Vi prego di non mandarmi più messaggi su Instagram.", "it"),
        ("Pedia-vos que deixassem de me mandar mensagens pelo Instagram.", "pt"),
    ],
)
def test_polite_opt_outs_are_opt_outs(text: str, language: str) -> None:
    decision = run(classified(text, language=language))
    assert decision.opt_out == "out"


# Round 15: the request after the story of how the messages started (read sentence by
# sentence), "no longer", the subjunctive of a wish, and chat shorthand.
@pytest.mark.parametrize(
    ("text", "language"),
    [
        (
            "I bought a lamp from you in June and ever since then I keep getting offers from "
            "you on Instagram every few days, which I never asked for and really do not want. "
            "Please stop messaging me on there.",
            "en",
        ),
        ("Could you no longer contact me through this page, thank you.", "en"),
        ("Preferiría que no me escribieran más por este chat.", "es"),
        ("que no me vuelvan a mandar mensajes por favor", "es"),
        ("schickt mir bitte über Facebook nichts mehr", "de"),
        ("arretez de menvoyer des msgs sur insta svp", "fr"),
        ("nn mandatemi piu messaggi grazie", "it"),
        ("n quero mais mensagens no whatsapp", "pt"),
    ],
)
def test_an_opt_out_after_a_story_or_in_shorthand_is_an_opt_out(text: str, language: str) -> None:
    decision = run(classified(text, language=language))
    assert decision.opt_out == "out"


# A business, a family or a team asks for all of them ("us", "uns", "nous", "nos", "ci").
@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("please don't message us on this number again, it's the office line", "en"),
        ("Por favor, no nos escribáis más por WhatsApp, es el número de la tienda", "es"),
        ("Bitte kontaktieren Sie uns über Instagram nicht mehr.", "de"),
        ("Merci de ne plus nous envoyer de messages sur ce compte.", "fr"),
        ("Non contattateci più su WhatsApp, grazie", "it"),
        ("Parem de nos enviar mensagens, por favor", "pt"),
    ],
)
def test_an_opt_out_for_us_is_an_opt_out(text: str, language: str) -> None:
    decision = run(classified(text, language=language))
    assert decision.opt_out == "out"


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("can I get same day delivery on a rug?", "en"),
        ("is my account deleted yet? I asked for it in March", "en"),
        ("do you deliver to Tenerife?", "en"),
        ("the warranty, does it cover a lamp from your shop? I have no order number", "en"),
    ],
)
def test_look_alikes_the_answers_do_not_settle_are_not_answered(text: str, language: str) -> None:
    decision = run(classified(text, language=language))
    assert decision.faq is None or not decision.faq.answered


def test_an_exchange_in_case_the_size_does_not_fit_is_sizes() -> None:
    decision = run(
        classified(
            "Wie fallen die Stiefel aus? Ich trage 41. Wenn sie nicht passen, kann ich tauschen?",
            language="de",
        )
    )
    assert decision.faq is not None
    assert decision.faq.entry_id == "sizes"
    assert decision.faq.answered


# Round 16: a request to stop the chat messages is an opt-out though the message names the
# newsletter, to keep it or to say it is not what is meant; one that asks to stop the e-mails
# stays the newsletter's.
@pytest.mark.parametrize(
    ("text", "language"),
    [
        (
            "Not the email newsletter, I mean these WhatsApp messages. Please stop sending them "
            "to this number.",
            "en",
        ),
        ("Keine Nachrichten mehr hier im Messenger bitte. Die Newsletter-Mails sind ok.", "de"),
        ("La newsletter me da igual. Por aquí no me mandéis más mensajes.", "es"),
        ("Arrêtez de m'envoyer des messages sur Instagram, la newsletter par mail ça va.", "fr"),
        ("La newsletter va bene, ma su WhatsApp non scrivetemi più.", "it"),
    ],
)
def test_a_stop_to_the_chat_messages_naming_the_newsletter_is_an_opt_out(
    text: str, language: str
) -> None:
    decision = run(classified(text, language=language))
    assert decision.opt_out == "out"


@pytest.mark.parametrize(
    "text",
    [
        "I get your WhatsApp messages fine. Please stop sending me the emails.",
        "stop sending me the newsletter on whatsapp",
    ],
)
def test_a_stop_to_the_emails_naming_a_chat_is_not_an_opt_out(text: str) -> None:
    assert run(classified(text)).opt_out is None


# Rounds 16 and 20: a person's cases next to an entry's topic, in new words (not evaluation
# messages).
@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("does your Leeds shop have the oak side table right now? don't want a wasted trip", "en"),
        ("¿Tenéis la lámpara de pie en la tienda de Madrid?", "es"),
        ("Dad paid with his card but I sent the cushions back, can the refund come to me?", "en"),
        ("Mi madre pagó con su tarjeta, ¿el reembolso me lo podéis hacer a mí?", "es"),
        ("Lo compró mi hermano y el número de pedido no lo tengo, ¿vale la garantía?", "es"),
        ("Kann ich bei der Bestellung von gestern die Anzahl ändern? 3 statt 1", "de"),
        ("Pouvez-vous refaire la facture à nouveau avec le nom de ma société ?", "fr"),
        ("Fate prezzi per aziende? Ci servono 50 cuscini per l'hotel", "it"),
        ("Posso pagar em reais ou só em libras?", "pt"),
        ("Ich möchte den Bezug gegen den gleichen in Dunkelgrün umtauschen, geht das?", "de"),
        # round 20
        ("Are your duvet covers Oeko-Tex certified?", "en"),
        ("¿Hacéis listas de boda?", "es"),
        ("Könnt ihr die Handtücher mit Namen besticken?", "de"),
        ("Vous faites la gravure d'initiales sur les planches à découper ?", "fr"),
        ("how much have I got left on my gift card?", "en"),
        ("Ich will den Pullover zurückschicken, hab ihn aber schon dreimal benutzt", "de"),
        (
            "Could the receipt be made out to our company instead of me? Are you able to do that?",
            "en",
        ),
        ("La garantía cubre también las cuchillas desafiladas?", "es"),
    ],
)
def test_look_alikes_are_not_answered(text: str, language: str) -> None:
    decision = run(classified(text, language=language))
    assert decision.faq is None or not decision.faq.answered


@pytest.mark.parametrize(
    ("text", "language", "entry"),
    [
        ("how do I stop the sale emails? I don't want to delete my account", "en", "newsletter"),
        (
            "Wenn die Rücksendung bei euch ist, wann ist das Geld auf meinem Konto?",
            "de",
            "refund-time",
        ),
        # rounds 19 to 21: cue words in another sense ("renovar" no renewal, a "casa rural" no
        # remote address, "assumed" no hiring, a new job no vacancy, a physical shop no paper
        # gift card, "têm loja física" no stock...), a fault said as what no longer works
        (
            "Queremos renovar las sábanas de la casa rural, ¿cuánto tarda un pedido en llegar?",
            "es",
            "shipping-time",
        ),
        ("I assumed delivery was free, how much is postage?", "en", "shipping-cost"),
        ("do gift cards have to be bought in store or can I get one online?", "en", "gift-cards"),
        (
            "Vou renovar a roupa de cama toda. Quanto tempo demora a entrega em Inglaterra?",
            "pt",
            "shipping-time",
        ),
        # a blade that no longer turns is a fault, not a worn part
        ("La batidora tiene un año y la cuchilla ya no gira, ¿está en garantía?", "es", "warranty"),
        # an embroidered cushion bought is no request for embroidery
        (
            "Me regalaron un cojín bordado vuestro, ¿enviáis a Argentina?",
            "es",
            "international-shipping",
        ),
        ("can I buy a gift certificate online?", "en", "gift-cards"),
        # one year and a half ("1,5") is within the two years
        (
            "Die Kopfhörer knacken seit Wochen, gekauft vor 1,5 Jahren. Garantiefall?",
            "de",
            "warranty",
        ),
        # cue words in another sense: a new job, faithful service, a phone in Spanish, a shop
        (
            "Just started a new job, what time do you stop replying on a Saturday?",
            "en",
            "opening-hours",
        ),
        ("Tienen un número de teléfono? Escribir en español me cuesta", "es", "contact-phone"),
        ("Vou a Edimburgo em agosto. Têm loja física lá?", "pt", "stores"),
    ],
)
def test_entries_keep_their_questions(text: str, language: str, entry: str) -> None:
    decision = run(classified(text, language=language))
    assert decision.faq is not None
    assert decision.faq.entry_id == entry
    assert decision.faq.answered


# The twenty-second held-out part, read as it joined dev.
@pytest.mark.parametrize(
    "text",
    [
        "Muito obrigada pela ajuda, foram muito simpáticos. Fico mais descansada.",
        "obrigado mais uma vez!",
    ],
)
def test_portuguese_mais_is_no_but_in_a_thanks(text: str) -> None:
    state = ConversationState(
        bot_turns=1,
        messages_seen=1,
        last_customer_message_at=datetime.now(UTC) - timedelta(minutes=2),
    )
    decision = run(classified(text, language="pt"), state=state)
    assert decision.close is not None


def test_a_present_for_a_colleague_is_no_request_for_a_person() -> None:
    decision = run(
        classified("Vorrei regalare una gift card a una collega, da quanto partono?", language="it")
    )
    assert "human-request" not in decision.matched_rules
    assert decision.faq is not None
    assert decision.faq.entry_id == "gift-cards"
    assert decision.faq.answered


# Rounds 19 and 21: look-alikes a person takes at once, with no open question first.
@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Necesitamos 40 toallas para el gimnasio, ¿hacéis descuento?", "es"),
        ("Fazem um preço especial para quantidades grandes? São para o nosso hostel", "pt"),
        ("Se ne prendo 12 set fate uno sconto?", "it"),
        ("Vous faites un prix pour 20 plaids ? C'est pour notre gîte", "fr"),
        ("Ich möchte mein Konto sofort löschen, nicht erst in 30 Tagen", "de"),
        ("My toaster lasted three years and now it's dead, any warranty left?", "en"),
        ("Posso riportare il cuscino comprato online nel vostro negozio di Londra?", "it"),
        ("O edredão serve para quem tem alergia aos ácaros?", "pt"),
        ("¿Tenéis descuento para estudiantes?", "es"),
        ("Könnt ihr die Handtücher mit Namen besticken?", "de"),
        ("my sister gave me a gift card, how much money is still inside?", "en"),
    ],
)
def test_look_alikes_go_to_a_person_at_once(text: str, language: str) -> None:
    decision = run(classified(text, language=language))
    assert decision.handoff is not None
    assert decision.faq is None or not decision.faq.answered
