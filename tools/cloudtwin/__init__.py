"""The cloud twin: a local stand-in for Huawei OceanConnect (legacy MQTT) and Envision EnOS.

A real MQTT broker with TLS (the embedded amqtt broker, or mosquitto for interoperability) plus each
cloud's rules: CONNECT credentials checked the way the cloud checks them (written from
shared/reference/clouds.md, never imported from the firmware's lib/), commands delivered and their replies
matched, telemetry counted by sample id, EnOS dynamic activation, topic permissions, the EnOS connect rate
limit. Run it with ``python -m tools.cloudtwin``; drive and inspect it through its control socket
(``tools.cloudtwin.control.TwinControl``). docs/cloudtwin.md is the manual.
"""
