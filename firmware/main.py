# Device entry point (copied to / as main.py). On a board it runs the application from config.json; on the
# MicroPython unix port (`make run`) it takes options:
#   micropython firmware/main.py [--config F] [--secrets F] [--port TTY] [--transcript F] [--bench [--headroom B]]
import sys


def _unix_args(argv):
    opts = {"--config": "config.json", "--secrets": "secrets.json", "--port": None, "--transcript": None,
            "--bench": None, "--headroom": "0"}
    i = 1
    while i < len(argv):
        if argv[i] == "--bench":
            opts["--bench"] = True
            i += 1
            continue
        if argv[i] not in opts or i + 1 >= len(argv):
            print("usage: micropython firmware/main.py [--config F] [--secrets F] [--port TTY] [--transcript F] [--bench [--headroom BYTES]]")
            sys.exit(2)
        opts[argv[i]] = argv[i + 1]
        i += 2
    return opts


def main():
    from app.main import run

    if sys.platform not in ("linux", "darwin"):
        run()  # a board: safe mode returns here and the REPL stays available
        return
    o = _unix_args(sys.argv)
    tr = None
    if o["--transcript"]:
        from cellmqtt.at_engine import Transcript

        f = open(o["--transcript"], "a")
        tr = Transcript(lambda s: (f.write(s), f.flush()))
    if run(o["--config"], o["--secrets"], None, tr, bool(o["--bench"]), int(o["--headroom"]), o["--port"]) is not None:
        sys.exit(2)  # safe mode: the configuration was refused


main()
