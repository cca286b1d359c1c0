# Start-up: load the configuration, set up logging, build the board and run the application. A bad
# configuration never bricks the device: the error names the key, the application does not start, and the
# REPL / mpremote stay usable (safe mode) so the file can be fixed.
import asyncio
import os

from app import config, log


class SafeMode(Exception):
    """The device is in safe mode; ``key`` names the configuration key that was refused."""

    def __init__(self, err):
        super().__init__("SAFE MODE: %s -- fix it (mpremote cp config.json :) and reset" % err)
        self.key = getattr(err, "key", None)


def _mkdirs(path):
    d = ""
    for part in path.split("/"):
        if not part:
            d = "/"
            continue
        d = d + part if d in ("", "/") else d + "/" + part
        try:
            os.mkdir(d)
        except OSError:
            pass


def setup(config_path="config.json", secrets_path="secrets.json"):
    """The validated configuration, with logging configured; raises SafeMode for a bad configuration."""
    try:
        cfg = config.load(config_path, secrets_path)
    except config.ConfigError as e:
        log.error("%s", e)
        raise SafeMode(e) from None
    lc = cfg["log"]
    log.configure(level=lc["level"].upper(), path=lc["file"], max_bytes=lc["file_max"], keep=lc["file_keep"])
    for s in config.secrets(cfg):
        log.add_secret(s)
    _mkdirs(cfg["state_dir"])
    return cfg


def build(cfg, board=None, secrets_path="secrets.json", transcript=None, port=None):
    from app.supervisor import App, make_modem

    if board is None:
        import board as board_mod  # the board definition installed next to main.py (boards/<name>/board.py)

        if port:  # unix port: the tty from the command line wins over modem.port (modem.baud still applies)
            cfg["modem"]["port"] = port
        board = board_mod.Board(cfg)
    modem = make_modem(cfg, board, log.debug, transcript=transcript, state_dir=cfg["state_dir"])
    return App(cfg, board, log, modem, secrets_path)


def run(config_path="config.json", secrets_path="secrets.json", board=None, transcript=None, bench=False,
        headroom=0, port=None):
    """Run the firmware until a reboot. Returns the SafeMode error instead of running when the configuration is
    bad (the caller then leaves the REPL available). ``bench`` (unix port, `make bench`): print the heap in use
    after start-up and the allocation counter at every telemetry cycle; ``headroom``: bytes left free above that
    baseline (the rest of the heap is pinned), to measure the peak the running firmware needs."""
    try:
        cfg = setup(config_path, secrets_path)
        app = build(cfg, board, secrets_path, transcript, port)
        if bench:
            import gc
            import micropython

            gc.collect()
            print("BENCH_BASELINE %d" % gc.mem_alloc())
            if headroom:  # leave this much heap free above the start-up baseline (make bench): pin the rest
                app.ballast = []
                while gc.mem_free() > headroom + 1100:
                    app.ballast.append(bytearray(1024))
            app.bench = lambda: print("BENCH_CYCLE %d %d %d" % (app.samples, micropython.mem_total(), gc.mem_alloc()))
    except SafeMode as e:
        print(e)
        return e
    except config.ConfigError as e:  # a reading or cloud key found bad while building
        e = SafeMode(e)
        print(e)
        return e
    asyncio.run(app.run())
