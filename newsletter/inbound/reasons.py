"""Why a delivery failed, from its status code and the words of the server: the one set of rules.

Pure: text in, a reason out. The same rules judge a bounce that came back later (a report read by
``verdict``) and a reply during the SMTP conversation (``smtp_reply_is_permanent``).

Only a failure of the address itself is permanent: the mailbox or the domain does not exist, or
the address has moved. Everything else - a full mailbox, a disabled account, spam and content
filters, blocks and reputation, sender authentication (SPF, DKIM, DMARC), rate limits, expiry,
network and system trouble - is about the message, the sender or the moment, even with a 5.x.x
status, so it is counted and never suppresses on its own. A plain "5xx is permanent" rule would
suppress three quarters of those.

The order of the checks is the rule, first match wins:

1. words that say the failure may pass ("temporarily", "try again later") or that the sender is
   refused ("sender address rejected: domain not found");
2. words no server uses unless the address is missing ("user unknown", "no such domain");
3. words of any other cause (a "user over quota (#5.1.1)" is a full mailbox, not a bad address);
4. looser words of a missing address ("mailbox unavailable", "recipient address rejected");
5. the enhanced status code alone (5.1.1, 5.1.2, 5.1.10, ...).

Where in the conversation the server refused counts too: a refusal of MAIL FROM is about the
sender; a "user unknown" in reply to DATA, after the server took the recipient at RCPT, is a
content filter's (unless the status is 5.1.x). The kinds of phrases follow what mail systems
say and what sisimai (libsisimai.org) and Mailman's flufl.bounce learned to look for.
"""

from __future__ import annotations

import re
from typing import Final, Literal

Reason = Literal[
    # the address itself: permanent
    "user-unknown",
    "host-unknown",
    "moved",
    # anything else: counted
    "mailbox-full",
    "disabled",
    "spam",
    "blocked",
    "policy",
    "authentication",
    "rate-limited",
    "too-big",
    "relaying",
    "sender",
    "expired",
    "network",
    "system",
    "mailer",
    "filtered",
    "undetermined",
]

Stage = Literal["MAIL", "RCPT", "DATA"]

PERMANENT_REASONS: Final = frozenset({"user-unknown", "host-unknown", "moved"})

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")
_REPLY = re.compile(r"(?<![\w.\-])([245][0-5]\d)(?=[ \-]|$)")
_URL = re.compile(r"(?:https?|ftp)://([^/\s?#]*)\S*", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def _any(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


# 1. Words that say the failure may pass, or that the sender is refused: no "unknown" beside them
# makes the address wrong. All patterns see lowercase text, one space between words, and URLs cut
# to their host (``normalise``).
_FIRST: Final[tuple[tuple[Reason, re.Pattern[str]], ...]] = (
    (
        "system",
        _any(
            r"temporar", r"try again later", r"[,;:-] ?try again", r"will be retried", r"greylist"
        ),
    ),
    (
        "sender",
        _any(
            r"sender\S* (?:address |domain |e-?mail )?(?:\S+ )?(?:rejected|refused|denied|invalid|unknown|not found|not allowed|must exist|does not exist|verif\w*)",
            r"domain of sender",
            r"(?:invalid|unknown|bad|unverified|unauthenticated|rejected) senders?\b",
        ),
    ),
)

# 2. Words no server uses unless the address itself does not exist.
_DEFINITE: Final[tuple[tuple[Reason, re.Pattern[str]], ...]] = (
    (
        "user-unknown",
        _any(
            r"(?:user|recipient|mailbox|addressee)s? (?:unknown|not known)",
            r"unknown (?:or illegal )?(?:user|recipient|mailbox|local[- ]?part|e-?mail address)",
            r"no such (?:user|recipient|mailbox|person|local user|account)",
            r"(?:user|recipient|mailbox|account|e-?mail address)\S* (?:\S+ ){0,5}(?:does not|doesn'?t|did not|not) exist",
            r"(?:user|recipient|mailbox) (?:\S+ )?not found",
            r"recip\w*notfound",
            r"recipient address rejected: access denied",  # Microsoft 365: not in its directory
            r"is not a known user",
            r"(?:does not|doesn'?t) have an? (?:\S+ )?account",
            r"not (?:listed|found) in (?:\S+ )?(?:directory|address book)",
        ),
    ),
    (
        "host-unknown",
        _any(
            r"host (?:or domain name )?(?:\S+ )?(?:unknown|not found)",
            r"unknown (?:host|domain)",
            r"no such (?:domain|host)",
            r"(?:domain|host)(?: name)? (?:\S+ )?(?:does not|doesn'?t|must) exist",
            r"name or service not known",
            r"unroute?able (?:address|domain|mail domain)",
            r"null ?mx",
            r"(?:mx|srv) record indicated no smtp service",  # Exim: a null MX (RFC 7505)
            r"(?:couldn'?t|could not|unable to) find (?:a |any )?mail exchanger",  # qmail
        ),
    ),
)

# 3. What else is about the message, the sender or the moment, even with a 5.x.x status.
_SOFT: Final[tuple[tuple[Reason, re.Pattern[str]], ...]] = (
    (
        "mailbox-full",
        _any(
            r"(?:mail ?box|mail ?folder|inbox)(?:'s)? (?:is |was )?full",
            r"full mailbox",
            r"(?:mail ?box|mail ?folder|maildir|inbox|account|user|recipient)\S* (?:is |has |was )?(?:over|exceed\w*|reached) (?:\w+ )?(?:quota|storage|disk|size|limit)",
            r"over ?quota",
            r"quota (?:exceeded|violation|usage exceeded|full)",
            r"exceed\w* (?:\w+ )?(?:quota|storage allocation|disk space)",
            r"(?:insufficient|not enough|no|out of) (?:disk |storage )?(?:space|storage)",
            r"disk quota",
            r"mailbox size limit",
            r"storage (?:quota|limit|allocation)",
            r"space (?:has been|is) used up",
            r"too many messages (?:in|on)",
        ),
    ),
    (
        "disabled",
        _any(
            r"(?:account|mailbox|user|recipient|address)\S* (?:\S+ )?(?:is |has been |was )?(?:currently |temporarily )?(?:disabled|suspended|deactivated|frozen|locked|blocked|on hold|inactive)",
            r"(?:disabled|suspended|deactivated|inactive|locked) (?:recipient|account|mailbox|user|address)",
            r"\b(?:disabled|suspended|deactivated)\b",
            r"not accepting (?:any )?(?:new )?(?:mail|messages)",
            r"no longer accepts mail",
        ),
    ),
    (
        "spam",
        _any(
            r"spam(?!haus|cop)",
            r"junk",
            r"unsolicited",
            r"bulk (?:e-?)?mail",
            r"phish",
            r"virus",
            r"malware",
            r"infected",
            r"suspicious",
            r"content (?:filter|rejected|policy)",
            r"message (?:content|body) (?:rejected|not accepted|filtered)",
            r"rejected (?:by|due to) (?:\w+ )?(?:content|filter)",
            r"mail flood",
        ),
    ),
    (
        "authentication",
        _any(
            r"\bspf\b",
            r"\bdkim\b",
            r"\bdmarc\b",
            r"\barc validation",
            r"authenticat",
            r"not authori[sz]ed",
            r"auth ?required",
            r"mismatch",
            r"\bptr\b",
            r"reverse (?:dns|lookup|hostname)",
            r"\brdns\b",
            r"does not resolve",
        ),
    ),
    (
        "relaying",
        _any(r"relay", r"rcpthosts", r"not (?:a )?(?:local|our) (?:domain|host)"),
    ),
    (
        "blocked",
        _any(
            r"block",
            r"black ?list",
            r"deny ?list",
            r"\bban(?:ned)?\b",
            r"\brbl\b",
            r"dnsbl",
            r"spamhaus|spamcop|barracuda|sorbs|abuseat",
            r"(?<!not )listed (?:at|in|on|by)",
            r"reputation",
            r"refused to talk",
            r"client host (?:\S+ )?rejected",
            r"\b(?:helo|ehlo)\b",
            r"not allowed to (?:send|connect|post)",
            r"your (?:ip|server|host|network)",
            r"(?:sender|sending|client|your|connecting) ip\b",
            r"\bip (?:address )?(?:\S+ )?(?:is )?(?:listed|blocked|blacklisted|rejected|refused|not allowed)",
            r"access (?:denied|forbidden)",
            r"prohibited",
            r"administrative",
        ),
    ),
    (
        "policy",
        _any(
            r"polic(?:y|ies)",
            r"\brules?\b",
            r"not permitted",
            r"refused due to recipient preferences",
            r"only accept",
            r"restricted",
            r"protected",
            r"not compliant|non-?compliant|rfc ?5322|rfc ?2822|rfc ?822",
            r"duplicate header",
            r"header (?:\S+ )?(?:invalid|missing|malformed)",
            r"\bloops?\b",
            r"too many hops",
            r"duplicated? message-?id",
        ),
    ),
    (
        "too-big",
        _any(
            r"too (?:big|large)",
            r"size (?:\S+ )?(?:exceeds|limit|too)",
            r"exceeds (?:the )?(?:\S+ )?(?:size|length)",
            r"message length",
        ),
    ),
    (
        "rate-limited",
        _any(
            r"rate limit",
            r"rate of",
            r"too many (?:connections|recipients|messages|emails|mails|sessions|concurrent)",
            r"(?:limit|maximum|threshold) (?:\S+ )?(?:exceeded|reached)",
            r"exceeded (?:the )?(?:\S+ )?(?:limit|maximum|threshold)",
            r"throttl",
            r"volume",
            r"deferred",
            r"try (?:again )?later",
        ),
    ),
    (
        "sender",
        _any(
            r"(?:from|return[- ]path|envelope sender) (?:address |domain )?(?:\S+ )?(?:rejected|refused|denied|invalid|not (?:allowed|verified|registered))",
            r"your (?:e-?mail )?address (?:\S+ )?(?:rejected|denied|blocked|blacklisted|invalid)",
            r"not (?:a )?(?:registered|verified)",
        ),
    ),
    (
        "expired",
        _any(
            r"expired",
            r"timed? ?out",
            r"could not (?:be )?deliver\w* for",
            r"delivery time",
            r"retry time",
            r"in the queue for",
            r"giving up\b(?! on)",
        ),
    ),
    (
        "network",
        _any(
            r"connection (?:refused|reset|dropped|closed|lost|failed)",
            r"network",
            r"no route to host",
            r"unreachable",
            r"could not connect|can'?t connect|unable to connect",
            r"lost connection",
            r"\b(?:tls|ssl|starttls)\b|certificate",
            r"socket",
        ),
    ),
    (
        "system",
        _any(
            r"system (?:error|failure|problem)",
            r"mailer error",
            r"internal (?:error|server error|failure)",
            r"local (?:error|problem)",
            r"(?:server|service) (?:busy|unavailable|not available)",
            r"resources",
            r"configuration",
            r"misconfigured",
            r"i/o error",
            r"out of memory",
        ),
    ),
)

# 4. What also names a missing address or domain, or a moved one, but is said loosely enough
# that any of the words above beside it wins.
_HARD: Final[tuple[tuple[Reason, re.Pattern[str]], ...]] = (
    (
        "user-unknown",
        _any(
            r"(?:address|account|local[- ]?part)\S* (?:\S+ )?(?:unknown|not known)",
            r"(?:address|account|person)\S* (?:\S+ ){0,2}(?:does not|doesn'?t|did not|do not|not) (?:exist|found)",
            r"(?:user|recipient|mailbox|address|account|person)\S* (?:\S+ )?(?:was |is |could )?not (?:be )?(?:found|listed|recogni[sz]ed|present)",
            r"no such (?:address|e-?mail)",
            r"no (?:mailbox|account|user) (?:here |found )?(?:by that name|for|with)",
            r"no mailbox",
            r"(?:invalid|bad|illegal|non-?existent|inexistent) (?:destination )?(?:recipient|mailbox|user|address|e-?mail address|account)",
            r"not (?:a )?valid (?:recipient|mailbox|user|address|e-?mail)",
            r"(?:recipient|address|mailbox|user) (?:\S+ )?(?:is )?(?:invalid|not valid|not active)",
            r"no longer valid",
            r"invalid (?:\S+ ){0,2}user ?id",
            r"mailbox (?:is )?(?:unavailable|not available)",
            r"mailbox name not allowed",
            r"(?:recipient )?address rejected",
            r"recipient rejected",
            r"utilisateur inconnu|destinataire inconnu|unbekannt",
            r"no existe|inexistente|sconosciuto|non esiste",
        ),
    ),
    (
        "host-unknown",
        _any(
            r"(?:domain|host)(?: name)? (?:\S+ )?not (?:found|known)",
            r"domain is not reachable",
            r"(?:host|domain)\S* (?:\S+ )?(?:does not|doesn'?t) accept (?:any )?(?:e-?)?mail",
            r"no mx (?:record|host)",
            r"(?:domain|host) (?:\S+ )?(?:unknown|invalid|not valid)",
            r"(?<![@\w.-])[a-z0-9-]+(?:\.[a-z0-9-]+)+ does not exist",
        ),
    ),
    (
        "moved",
        _any(
            r"has moved",
            r"moved (?:permanently|to)",
            r"(?:has been|was) replaced by",
            r"user not local",
            r"no longer (?:at|with) this",
        ),
    ),
    (
        "user-unknown",
        _any(r"(?<!file )(?<!directory )(?<!folder )does not exist"),
    ),
)

# 5. Enhanced status codes (RFC 3463) that name the address itself, when no words say otherwise.
_PERMANENT_STATUS: Final[dict[str, Reason]] = {
    "5.1.1": "user-unknown",  # bad destination mailbox address
    "5.1.2": "host-unknown",  # bad destination system address
    "5.1.3": "user-unknown",  # bad destination mailbox address syntax
    "5.1.6": "moved",  # destination mailbox has moved, no forwarding address
    "5.1.10": "host-unknown",  # recipient address has null MX (RFC 7505)
    "5.4.4": "host-unknown",  # unable to route
}


# Where in the SMTP conversation the server refused, as mail systems write it in their reports.
_STAGES: Final[tuple[tuple[Stage, re.Pattern[str]], ...]] = (
    (
        "RCPT",
        _any(
            r">>> ?rcpt to",
            r"in reply to rcpt to",
            r"after rcpt(?: to| command)",
            r"did not like our rcpt",
            r"does not like recipient",
            r"\[rcpt_to\]",
        ),
    ),
    (
        "DATA",
        _any(
            r">>> ?data\b",
            r"in reply to (?:end of )?data",
            r"after (?:end of )?data\b",
            r"did not like our (?:final )?data",
            r"after i sent the message",
        ),
    ),
    (
        "MAIL",
        _any(
            r">>> ?mail from",
            r"in reply to mail from",
            r"after mail from",
            r"did not like our mail",
        ),
    ),
)


def normalise(text: str) -> str:
    """Lowercase, one space between words, a URL cut to its host.

    The host may say something (a blocklist's); the path is anyone's words.
    """
    return _SPACE.sub(" ", _URL.sub(r" \1 ", text)).strip().lower()


def find_status(text: str) -> str | None:
    """The first enhanced status code (RFC 3463) in ``text``, like ``"5.1.1"``."""
    m = _STATUS.search(text)
    return f"{m[1]}.{int(m[2])}.{int(m[3])}" if m else None


def find_reply(text: str) -> int | None:
    """The first SMTP reply code (RFC 5321) in ``text``, like 550."""
    m = _REPLY.search(text)
    return int(m[1]) if m else None


def find_stage(text: str) -> Stage | None:
    """The SMTP command a refusal answered, when ``text`` names exactly one.

    A transcript of a pipelined session lists MAIL, RCPT and DATA together, and then which one
    was refused is anyone's guess.
    """
    said = normalise(text)
    found = {stage for stage, p in _STAGES if p.search(said)}
    return found.pop() if len(found) == 1 else None


def classify(status: str | None, text: str, stage: Stage | None = None) -> Reason:
    """Why a delivery failed: from the words first, then from the status code.

    ``status`` is the enhanced status code the report gives (``"5.1.1"``) or None; ``text`` is
    what the server or the report says about it; ``stage`` the SMTP command it answered, when
    known. The status class (4 or 5) is not judged here: a final failure of an unknown user is
    the address's fault whatever class the last attempt got.
    """
    said = normalise(text)
    if stage == "MAIL":
        return "sender"  # refused before any recipient was named
    reason = _from_words(said)
    if reason == "user-unknown" and stage == "DATA" and not _addresses_status(status):
        # The server took the recipient at RCPT and refused the message once it saw it: a
        # content filter answering in the words of a missing mailbox.
        return "filtered"
    if reason != "undetermined":
        return reason
    code = status or find_status(said)
    if code is not None:
        _, _, rest = code.partition(".")
        return _PERMANENT_STATUS.get("5." + rest, "undetermined")
    return "undetermined"


def _from_words(said: str) -> Reason:
    """The first reason whose words ``said`` has, tier by tier (1 to 4 above)."""
    for tier in (_FIRST, _DEFINITE, _SOFT, _HARD):
        for reason, pattern in tier:
            if pattern.search(said):
                return reason
    return "undetermined"


def _addresses_status(status: str | None) -> bool:
    """A status of the 5.1.x family: the destination address is bad (RFC 3463)."""
    return status is not None and status.split(".")[1:2] == ["1"]


def is_permanent(reason: Reason) -> bool:
    """A failure of the address itself: the subscriber can be suppressed at once."""
    return reason in PERMANENT_REASONS


def smtp_reply_is_permanent(code: int, text: str, stage: Stage | None = None) -> bool:
    """Whether a reply during the SMTP conversation condemns the address itself.

    Only a 5xx can; among them ``550 5.1.1 user unknown`` does, ``550 5.7.1`` (blocked, policy)
    does not: that is about us, the sender, not about the address. A 5xx that says nothing
    either way is not (it is counted as a soft bounce instead). ``stage`` is the command the
    reply answered (a "user unknown" in reply to DATA is a content filter's).
    """
    if not 500 <= code <= 599:
        return False
    status = find_status(text)
    if status is not None and not status.startswith("5."):
        return False
    reason = classify(status, text, stage)
    if reason == "undetermined" and code == 551:  # "user not local" (RFC 5321)
        return True
    return is_permanent(reason)
