"""modemsim: an emulator of the Quectel BG96 and BC660K-GL modules on a pty, with a real network side.

Run it with ``python -m tools.modemsim --profile bg96|bc660k --link PATH`` (see ``docs/modemsim.md``).
The AT behaviour follows ``/work/shared/reference/quectel-*.md``; the network side opens real TCP/TLS
connections and speaks MQTT with paho-mqtt, so the broker on the other end checks every packet.

Modules:
  core      the engine: UART framing, command dispatch, data modes, URCs, power/sleep, faults, counters
  common    3GPP/V.250 commands both modules share (echo, CMEE, SIM, registration, clock, PSM, ...)
  mqtt_at   the QMT* MQTT client per index (both modules, profile-specific formats)
  bg96      BG96 profile: UFS file system, SSL contexts by file name, QSSL* sockets, PDP (QIACT)
  bc660k    BC660K-GL profile: inline certificates, QSSL* on ctx 0/conn 0, sleep, default PDP cid 0
  network   name resolution, TCP, TLS built from the module's SSL settings, paho MQTT on that socket
  faults    the fault script (rules: trigger -> actions)
  transcript  byte log of both directions with secrets redacted
  store     non-volatile state (UFS files, NV settings) on disk under --state-dir
  pty_link  the pty pair and the --link symlink
  control   the JSON-lines control socket
"""
