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


def _bench(headroom):
    # `make bench`: print the heap in use after start-up and the allocation counter at every telemetry cycle;
    # with ``headroom``, pin all of the heap but that many bytes above the start-up baseline (the peak the
    # running firmware needs)
    import gc

    import micropython

    def prepare(app):
        gc.collect()
        print("BENCH_BASELINE %d" % gc.mem_alloc())
        if headroom:
            app.ballast = []
            size = 1024  # smaller blocks once a fragmented heap has no 1 KB hole left (a MemoryError here
            while size >= 16 and gc.mem_free() > headroom + size + 64:  # is the ballast's, not the app's)
                try:
                    app.ballast.append(bytearray(size))
                except MemoryError:
                    size //= 2
        tm = app.telemetry
        tm.bench = lambda: print("BENCH_CYCLE %d %d %d" % (tm.samples, micropython.mem_total(), gc.mem_alloc()))

    return prepare


def main():
    from app.main import run

    if sys.platform not in ("linux", "darwin"):
        run()  # a board: safe mode returns here and the REPL stays available
        return
    o = _unix_args(sys.argv)
    tr = None
    if o["--transcript"]:
        try:
            from cellmqtt.at_transcript import Transcript
        except ImportError:  # a firmware frozen without it (manifest option transcript=False)
            print("--transcript: this firmware has no cellmqtt.at_transcript")
            sys.exit(2)
        f = open(o["--transcript"], "a")
        tr = Transcript(lambda s: (f.write(s), f.flush()))
    prepare = _bench(int(o["--headroom"])) if o["--bench"] else None
    if run(o["--config"], o["--secrets"], None, tr, o["--port"], prepare) is not None:
        sys.exit(2)  # safe mode: the configuration was refused


main()
