# Cloud commands: a registry of handlers, and the built-in ones (status, set_interval, reboot).
#
# A handler is fn(app, params) -> body (a dict, or None) and raises CommandError to fail with a message.
# Names are the cloud's command names: Huawei legacy "cmd", IoTDA "command_name", EnOS service id; EnOS
# measure-point set/get map onto "set" / "get".


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
    v = _number(params, "interval", "value", "interval_s")
    if not 1 <= v <= 86400:
        raise CommandError("interval must be 1..86400 s")
    app.set_interval(v)
    return {"interval": v}


def reboot(app, params):
    app.request_reboot()
    return {"rebooting": True}


def measurepoint_set(app, params):
    # EnOS measure-point set: the writable point is "interval"
    if not isinstance(params, dict) or not params:
        raise CommandError("nothing to set")
    unknown = [k for k in params if k != "interval"]
    if unknown:
        raise CommandError("not writable: %s" % ", ".join(unknown))
    return set_interval(app, params) and {}


def measurepoint_get(app, params):
    vals = dict(app.last_sample)
    vals["interval"] = app.interval
    if not params:
        return vals
    return {k: vals[k] for k in params if k in vals}


class Registry:
    def __init__(self):
        self.handlers = {"status": status, "set_interval": set_interval, "reboot": reboot,
                         "measurepoint_set": measurepoint_set, "measurepoint_get": measurepoint_get}

    def add(self, name, fn):
        self.handlers[name] = fn

    def run(self, app, cmd):
        """(ok, body or error text) for a parsed cloud Command."""
        name = cmd.kind if cmd.kind in ("measurepoint_set", "measurepoint_get") else cmd.name
        fn = self.handlers.get(name)
        if fn is None:
            return False, "unknown command %s" % name
        try:
            return True, fn(app, cmd.params)
        except CommandError as e:
            return False, str(e)
