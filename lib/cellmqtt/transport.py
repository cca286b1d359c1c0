# The MQTT transport interface: one MQTT session, whatever carries it (the modem's native MQTT client,
# cellmqtt.qmt, or our own MQTT client over the modem's TLS socket, cellmqtt.mqtt_client). The app only ever
# sees this interface and these errors: every engine error is converted here, at the transport boundary.
#
#   t = driver.NATIVE(driver, config)  or  MqttClient(socket_class(driver, config))   (the app's start-up wiring)
#   t.on_message(cb)                      # cb(topic: str, payload: bytes, or a Truncated when larger than the
#                                         # receive buffer) -- called from the reader; must not block
#   await t.connect(host, port, client_id, username, password, keepalive=120, clean=True)
#   t.sent_connect                        # after connect(), failed or not: did the broker see a CONNECT?
#                                         # (clouds rate-limit CONNECTs; a failed open costs nothing)
#   granted = await t.subscribe(topic, qos)
#   await t.publish(topic, payload, qos)  # returns once the broker acknowledged it (QoS 1) or it was sent (QoS 0)
#   reason = await t.wait_lost()          # returns the MqttError that ended the session (LinkLost.layer: what broke)
#   await t.disconnect()                  # never raises for an already-closed session
#   t.is_connected(); t.max_payload       # largest payload publish() accepts


class Truncated:
    """A received message the transport could not hold whole (larger than its receive buffer): its first bytes
    and its real size (and, where the transport kept them, its last bytes), delivered in place of the payload so
    the app can still answer it ("too large") by its id. len() is the real size."""

    def __init__(self, head, size, tail=b""):
        self.head = head
        self.size = size
        self.tail = tail  # its last bytes, when the transport could keep them (the id a sender puts last)

    def __len__(self):
        return self.size


class MqttError(Exception):
    """Base of every transport failure. ``code`` is the module's or the broker's own code (or None)."""

    def __init__(self, msg, code=None):
        super().__init__(msg)
        self.code = code


class ConnectRefused(MqttError):
    """The broker answered CONNACK with a refusal: 1 protocol, 2 client id, 3 unavailable, 4 bad user/password,
    5 not authorised (MQTT 3.1.1 section 3.2.2.3)."""

    def credentials(self):
        return self.code in (4, 5)


class NetworkError(MqttError):
    """The broker could not be reached or the link broke (socket, PDP, module reset)."""


class TlsError(NetworkError):
    """The TLS handshake failed: certificate not trusted/expired, no common cipher, client certificate refused."""


class DnsError(NetworkError):
    """The broker's host name could not be resolved."""


class MqttTimeout(MqttError):
    """No answer within the time the module or protocol allows."""


# What broke when a session ended (LinkLost.layer): the supervisor recovers from there.
SESSION = 0  # the MQTT session (closed by the peer, CONNACK timeout, ...): connect again
NETWORK = 1  # the data path under it (PDP context, ping failures): bring the network up again
MODULE = 2  # the module itself (restarted, powered down, driver closed): start the module again


class LinkLost(NetworkError):
    """An established session ended (``+QMTSTAT``, socket closed, ping timeout, modem reset). ``layer`` says
    what broke: SESSION, NETWORK or MODULE."""

    def __init__(self, msg, code=None, layer=SESSION):
        super().__init__(msg, code)
        self.layer = layer


class PayloadError(MqttError):
    """The payload or topic cannot be sent on this transport (too long, forbidden bytes, bad characters)."""


class SubscribeRefused(MqttError):
    """The broker refused a subscription (SUBACK 0x80)."""


# CONNACK return codes -> words, for messages and logs.
CONNACK_TEXT = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


def connack_error(code):
    return ConnectRefused("broker refused the connection: %s (CONNACK %d)" % (CONNACK_TEXT.get(code, "unknown"), code),
                          code)


# ModemSocket -- a TLS byte stream through the modem (QSSLOPEN), the carrier of mqtt_client.MqttClient.
# Drivers provide it; it is duck-typed like Transport:
#   s.max_send                 largest chunk one send command carries (send() splits larger buffers)
#   s.on_data(cb)              cb(data: bytes) for every received chunk, called from the reader; must not block
#   s.on_close(cb)             cb(err: MqttError) once, when the peer or the module closed the socket
#   await s.open(host, port)   raises NetworkError / TlsError / DnsError / MqttTimeout
#   await s.send(data, secret=False)   the whole buffer, or raises NetworkError; secret: it carries a credential
#                              (kept out of every transcript)
#   await s.close()            never raises for an already-closed socket
#   s.half_duplex              optional, True when the module drops incoming data while it is sending
#                              (BC660K-GL data mode): the client then sends nothing until an expected answer came
