# Cloud commands: a registry of handlers, and the built-in ones (status, set_interval, reboot, set, get).
#
# A handler is fn(app, params) -> body (a dict, or None) and raises CommandError to fail with a message.
# Command.job picks the handler (cellmqtt.cloudsign): RUN runs the handler named like the cloud's command
# (Huawei legacy "cmd", IoTDA "command_name", EnOS service id); SET and GET run "set" / "get" (EnOS
# measure-point set/get, IoTDA properties set/get).
from cellmqtt import cloudsign as cs


class CommandError(Exception):
    pass


def _number(params, *keys):
    for k in keys:
        v = params.get(k) if isinstance(params, dict) else None
        if v is not None:
            if type(v) is not int or isinstance(v, bool):
                raise CommandError("%s must be an integer" % k)
            return v
    raise CommandError("missing %s" % " or ".join(keys))


def status(app, params):
    return app.status()


def set_interval(app, params):
    v = _number(params, "interval", "value", "interval_s")  # "value": a Huawei command's usual parameter
    if not 1 <= v <= 86400:
        raise CommandError("interval must be 1..86400 s")
    app.set_interval(v)
    return {"interval": v}


def reboot(app, params):
    app.request_reboot()
    return {"rebooting": True}


def values_set(app, params):
    # set values: the writable one is "interval"
    if not isinstance(params, dict) or not params:
        raise CommandError("nothing to set")
    unknown = [k for k in params if k != "interval"]
    if unknown:
        raise CommandError("not writable: %s" % ", ".join(unknown))
    return set_interval(app, params) and {}


def values_get(app, params):
    vals = dict(app.telemetry.last_sample)
    vals["interval"] = app.telemetry.interval
    if not params:
        return vals
    return {k: vals[k] for k in params if k in vals}


_BY_JOB = {cs.SET: "set", cs.GET: "get"}
OK = 0
UNKNOWN = 1  # no handler of that name
FAILED = 2  # the handler refused (CommandError)


class Registry:
    def __init__(self):
        self.handlers = {"status": status, "set_interval": set_interval, "reboot": reboot, "set": values_set,
                         "get": values_get}

    def add(self, name, fn):
        self.handlers[name] = fn

    def run(self, app, cmd):
        """(OK, body) or (UNKNOWN / FAILED, error text) for a parsed cloud Command."""
        name = _BY_JOB.get(cmd.job, cmd.name)
        fn = self.handlers.get(name)
        if fn is None:
            return UNKNOWN, "unknown command %s" % name
        try:
            return OK, fn(app, cmd.params)
        except CommandError as e:
            return FAILED, str(e)
        except Exception as e:  # noqa: BLE001 -- a handler bug: the command fails, the dispatcher goes on
            app.log.error("command %s: handler failed: %s: %s", name, type(e).__name__, e)
            return FAILED, "internal error (%s)" % type(e).__name__
