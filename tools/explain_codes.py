"""The result and error codes `python -m tools.explain` puts into words.

Sources (summarised in our own words): 3GPP TS 24.301 section 9.9.3.9 and annex A (EMM causes), 3GPP TS 27.007
(+CME ERROR, +CEREG), and the Quectel manuals as digested for this project in docs/modemsim.md (QMTOPEN,
QMTCONN, QMTSTAT, QSSLOPEN, file and TCP/IP errors, the BC660K-GL's 85xx MQTT errors).
"""

# 3GPP TS 24.301 9.9.3.9: EMM cause values, as a network gives them in an ATTACH/TAU REJECT
EMM_CAUSE = {
    2: "IMSI unknown in HSS: the operator does not know this SIM (not provisioned or deactivated)",
    3: "illegal UE: the network failed to authenticate the SIM (blocked, cloned or wrong keys)",
    5: "IMEI not accepted: the module's IMEI is blocked or not allowed on this subscription",
    6: "illegal ME: the device (IMEI) is barred",
    7: "EPS services not allowed: the subscription has no LTE/LTE-M/NB-IoT data service",
    8: "EPS and non-EPS services not allowed: the subscription allows no service at all",
    9: "UE identity cannot be derived by the network (a temporary identity the network forgot; re-attach)",
    10: "implicitly detached: the network dropped the registration (re-attach)",
    11: "PLMN not allowed: this operator does not accept the SIM (roaming agreement missing or forbidden)",
    12: "tracking area not allowed: the subscription is barred in this area",
    13: "roaming not allowed in this tracking area",
    14: "EPS services not allowed in this PLMN",
    15: "no suitable cells in tracking area: try another band or radio technology (LTE-M vs NB-IoT)",
    16: "MSC temporarily not reachable",
    17: "network failure (operator side; retry later)",
    18: "CS domain not available",
    19: "ESM failure: the default bearer was refused, usually a wrong or unsubscribed APN",
    20: "MAC failure (authentication)",
    21: "synch failure (authentication sequence)",
    22: "congestion: the network is overloaded; it asks the device to back off",
    23: "UE security capabilities mismatch",
    24: "security mode rejected, unspecified",
    25: "not authorized for this CSG",
    26: "non-EPS authentication unacceptable",
    35: "requested service option not authorized in this PLMN",
    39: "CS service temporarily not available",
    40: "no EPS bearer context activated",
    42: "severe network failure",
    78: "PLMN not allowed to operate at the present UE location",
    95: "semantically incorrect message",
    96: "invalid mandatory information",
    97: "message type non-existent or not implemented",
    98: "message type not compatible with the protocol state",
    99: "information element non-existent or not implemented",
    100: "conditional IE error",
    101: "message not compatible with the protocol state",
    111: "protocol error, unspecified",
}

# 3GPP TS 27.007 +CREG/+CEREG <stat>
REG_STAT = {0: "not registered, not searching", 1: "registered, home network", 2: "not registered, searching",
            3: "registration denied", 4: "unknown (e.g. out of coverage)", 5: "registered, roaming"}

# +CME ERROR: 27.007 general codes, Quectel's additions (BG96 FILE 4xx, TCP/IP 55x-57x; BC660K-GL 3xx and 85xx)
CME = {
    0: "phone failure", 1: "no connection to phone", 3: "operation not allowed (e.g. a PIN when none is asked for)",
    4: "operation not supported", 5: "PH-SIM PIN required", 10: "SIM not inserted", 11: "SIM PIN required",
    12: "SIM PUK required", 13: "SIM failure", 14: "SIM busy", 15: "SIM wrong", 16: "incorrect password (PIN)",
    17: "SIM PIN2 required", 18: "SIM PUK2 required", 20: "memory full", 21: "invalid index", 22: "not found",
    23: "memory failure", 30: "no network service", 31: "network timeout",
    32: "network not allowed, emergency calls only", 50: "incorrect parameters", 100: "unknown error",
    301: "internal error", 302: "UE busy", 303: "UE not powered on (AT+CFUN=1 first)",
    304: "PDN not active (no data connection)",
    400: "file: invalid input value", 403: "file: drive full", 405: "file: not found", 406: "file: invalid name",
    407: "file: already exists (delete it first)", 409: "file: write failed", 420: "file: no space left",
    421: "file: operation timed out", 423: "file: too large", 425: "file: invalid parameter",
    515: "busy: initialisation or another command still in progress (wait and retry)",
    550: "TCP/IP: unknown error", 551: "TCP/IP: operation blocked", 552: "TCP/IP: invalid parameters",
    553: "TCP/IP: memory not enough", 554: "TCP/IP: socket creation failed", 555: "TCP/IP: operation not supported",
    556: "TCP/IP: socket bind failed", 557: "TCP/IP: socket listen failed", 558: "TCP/IP: socket write failed",
    559: "TCP/IP: socket read failed", 560: "TCP/IP: socket accept failed",
    561: "TCP/IP: opening the PDP context failed", 562: "TCP/IP: closing the PDP context failed",
    563: "TCP/IP: socket identity already in use", 564: "TCP/IP: DNS busy",
    565: "TCP/IP: DNS parse failed (host name not resolved)", 566: "TCP/IP: socket connect failed",
    567: "TCP/IP: socket has been closed", 568: "TCP/IP: operation busy", 569: "TCP/IP: operation timed out",
    570: "TCP/IP: PDP context broken down", 571: "TCP/IP: send cancelled", 572: "TCP/IP: operation not allowed",
    573: "TCP/IP: APN not configured", 574: "TCP/IP: port busy",
    602: "no RRC connection (the radio link is down)",
    8503: "MQTT: link layer error (the network connection failed)", 8504: "MQTT: illegal packet",
    8505: "MQTT: illegal character", 8506: "MQTT: illegal UTF-8 string", 8507: "MQTT: invalid parameter",
    8508: "MQTT: data longer than the remaining buffer", 8509: "MQTT: buffer overflow (too many in flight)",
    8510: "MQTT: out of memory", 8600: "MQTT: unknown error",
}

QMTOPEN = {-1: "failed to open the network connection (also: the TLS handshake failed)", 0: "opened",
           1: "wrong parameter", 2: "MQTT client identifier already in use (a stale client: close it first)",
           3: "failed to activate the PDP context", 4: "failed to resolve the host name (DNS)",
           5: "network disconnected"}

QMTCONN_RESULT = {0: "CONNECT sent and acknowledged", 1: "CONNECT being retransmitted", 2: "CONNECT failed to send"}

CONNACK = {0: "accepted", 1: "refused: unacceptable protocol version", 2: "refused: client identifier rejected",
           3: "refused: server unavailable", 4: "refused: bad user name or password", 5: "refused: not authorized"}

QMTSTAT = {1: "connection closed or reset by the peer", 2: "PINGREQ failed (keep-alive unanswered): link dead",
           3: "CONNECT failed (credentials or client id refused)", 4: "CONNACK timed out",
           5: "normal disconnect", 6: "repeated send failures", 7: "link not alive or server unavailable"}

QMTSUB = {0: "acknowledged", 1: "being retransmitted", 2: "failed to send"}

QMTPUB = QMTSUB

# BC660K-GL +QSSLOPEN/+QSSLSEND <err>
BC_SSL = {0: "success", -1: "exception", -2: "connection error (server unreachable, DNS)",
          -3: "certificate error (server not trusted, or outside its validity dates)", -4: "key error",
          -5: "cipher error (no cipher suite in common)", -6: "state error", -7: "timeout", -9: "other error"}

# BG96 +QSSLOPEN <err>: 0 or a TCP/IP code (CME 55x-57x)


def cme(code):
    """Words for a +CME ERROR code (int or the module's text)."""
    if isinstance(code, int):
        return CME.get(code, "error %d (not in the tables this tool knows)" % code)
    return code


def emm(cause):
    return EMM_CAUSE.get(cause, "EMM cause %d (not in 3GPP TS 24.301's list this tool knows)" % cause)
