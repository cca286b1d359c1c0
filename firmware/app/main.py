# Start-up: load the configuration, set up logging, check the board, build the parts (app.wiring) and run
# the application. A bad configuration never bricks the device: the error names the key, the application does
# not start, and the REPL / mpremote stay usable (safe mode) so the file can be fixed.
import asyncio
import os

from app import config, log


class SafeMode(Exception):
    """The device is in safe mode; ``key`` names the configuration key that was refused."""

    def __init__(self, err):
        super().__init__("SAFE MODE: %s -- fix it (mpremote cp config.json :) and reset" % err)
        self.key = getattr(err, "key", None)


def setup(config_path="config.json", secrets_path="secrets.json"):
    """The validated configuration, with logging configured and state_dir created; raises ConfigError."""
    cfg = config.load(config_path, secrets_path)
    lc = cfg["log"]
    log.configure(level=lc["level"].upper(), path=lc["file"], max_bytes=lc["file_max"], keep=lc["file_keep"])
    for s in config.secrets(cfg):
        log.add_secret(s)
    while config.notes:
        log.warn("%s", config.notes.pop(0))
    d = ""
    for part in cfg["state_dir"].split("/"):  # make the folder and its parents (no os.makedirs on MicroPython)
        d += part
        if part:
            try:
                os.mkdir(d)
            except OSError:
                pass  # it exists
        d += "/"
    return cfg


def check_board(cfg, board_cls):
    """Refuse (ConfigError -> safe mode) a configuration this board cannot run: another board's, or another
    modem than the one it carries (None: any, the unix port)."""
    if cfg["board"] != board_cls.NAME:
        raise config.ConfigError("board", "this firmware runs on %s" % board_cls.NAME)
    if board_cls.MODEM is not None and cfg["modem"]["type"] != board_cls.MODEM:
        raise config.ConfigError("modem.type", "this board carries a %s" % board_cls.MODEM)


def build(cfg, board=None, secrets_path="secrets.json", transcript=None, port=None):
    from app.core import App
    from app.wiring import build as wire

    if board is None:
        import board as board_mod  # the board definition installed next to main.py (boards/<name>/board.py)

        check_board(cfg, board_mod.Board)
        if port:  # unix port: the tty from the command line wins over modem.port (modem.baud still applies)
            cfg["modem"]["port"] = port
        board = board_mod.Board(cfg)
    modem, transport, profile = wire(cfg, board, log, transcript)
    return App(cfg, board, log, modem, transport, profile, secrets_path)


def run(config_path="config.json", secrets_path="secrets.json", board=None, transcript=None, port=None,
        prepare=None):
    """Run the firmware until a reboot. Returns the SafeMode error instead of running when the configuration is
    bad (the caller then leaves the REPL available). ``prepare(app)`` runs before the app starts (the unix
    entry script's --bench instrumentation)."""
    try:
        app = build(setup(config_path, secrets_path), board, secrets_path, transcript, port)
    except config.ConfigError as e:  # a bad file, or a reading or cloud key found bad while building
        log.error("%s", e)
        e = SafeMode(e)
        print(e)
        return e
    if prepare:
        prepare(app)
    asyncio.run(app.run())
