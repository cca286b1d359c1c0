# Configuration declared where it is used: each driver, transport and cloud profile declares the keys it reads
# (type, range, default: once), the app composes the declarations into one schema and validates the config
# files against it. A library user who builds a driver directly gets the declared defaults from section().
#
# A declaration is a dict of sections (nested dicts) of key specs, or a tuple of such dicts (layers: a driver
# declares its own keys on top of its base's without building a merged copy at import):
#   115200              a default value: its type is the key's type (bool, int, float, str, list)
#   (115200, 9600, 921600)  a number with a range: (default, low, high); default None = optional
#   ("bg96", "bc660k")  a choice: one of these strings, the first is the default (None first: optional)
#   str, int, dict      an optional value of that type (default None)
#   REQ                 a required non-empty string
# Errors are ConfigError naming the dotted key, never the value (it may be a secret).
REQ = "<required>"


class ConfigError(ValueError):
    """A bad configuration value; ``key`` is its dotted name (e.g. "mqtt.port")."""

    def __init__(self, key, why):
        super().__init__("config %s: %s" % (key, why))
        self.key = key


def _is_range(spec):
    return isinstance(spec, tuple) and len(spec) == 3 and type(spec[2]) in (int, float)


def default(spec):
    if isinstance(spec, tuple):
        return spec[0]
    if isinstance(spec, type):
        return None
    return spec


def compose(*decls):
    """One schema from several declarations (dicts or tuples of layers); a key declared twice must be declared
    the same way."""
    out = {}
    for d in decls:
        for layer in d if isinstance(d, tuple) else (d,):
            _union(out, layer, "")
    return out


def _union(out, d, path):
    for k, spec in d.items():
        have = out.get(k)
        if isinstance(spec, dict):
            if have is None:
                out[k] = have = {}
            elif not isinstance(have, dict):
                raise ValueError("config declarations disagree on %s%s" % (path, k))
            _union(have, spec, path + k + ".")
        elif have is None:
            out[k] = spec
        elif have != spec:
            raise ValueError("config declarations disagree on %s%s" % (path, k))


def section(config, name, decl):
    """config[name] with every key ``decl[name]`` declares present (declared defaults for missing or None
    values): what a driver reads when a library user hands it a partial configuration."""
    given = config.get(name) if config else None
    given = given if isinstance(given, dict) else {}
    out = {}
    for layer in decl if isinstance(decl, tuple) else (decl,):
        for k, spec in layer.get(name, {}).items():
            v = given.get(k)
            out[k] = default(spec) if v is None and not isinstance(spec, dict) else v
    return out


def _type_name(t):
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(t, "valid")


def _check_value(key, spec, v):
    if _is_range(spec):
        num = (int, float) if float in (type(spec[0]), type(spec[1])) else (int,)
        if not isinstance(v, num) or isinstance(v, bool):
            raise ConfigError(key, "must be " + _type_name(num[-1]))
        if not spec[1] <= v <= spec[2]:
            raise ConfigError(key, "must be between %s and %s" % (spec[1], spec[2]))
        return
    if isinstance(spec, tuple):
        if v not in spec:
            raise ConfigError(key, "must be one of " + ", ".join(x for x in spec if x))
        return
    want = spec if isinstance(spec, type) else (str if spec is REQ else type(spec))
    ok = isinstance(v, want) and (want is bool or not isinstance(v, bool))
    if want is float and isinstance(v, int) and not isinstance(v, bool):
        ok = True
    if not ok:
        raise ConfigError(key, "must be " + _type_name(want))
    if spec is REQ and not v:
        raise ConfigError(key, "is required")


def check(schema, given, path=""):
    """The complete configuration (declared defaults filled in) of ``given`` against ``schema``, or
    ConfigError. Keys the schema does not declare are refused."""
    if not isinstance(given, dict):
        raise ConfigError(path[:-1] or "(top)", "must be an object")
    for k in given:
        if k not in schema:
            raise ConfigError(path + k, "unknown key")
    out = {}
    for k, spec in schema.items():
        key = path + k
        v = given.get(k)
        if isinstance(spec, dict):
            out[k] = check(spec, {} if v is None else v, key + ".")
        elif v is None:
            if spec is REQ:
                raise ConfigError(key, "is required")
            out[k] = default(spec)
        else:
            _check_value(key, spec, v)
            out[k] = v
    return out


def get(cfg, key):
    """The value at a dotted key, or None."""
    v = cfg
    for part in key.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v


_AT_UNSAFE = '"\r\n\x1a\x1b\x00'


def at_safe(cfg, keys):
    """ConfigError for the first of ``keys`` (dotted) whose string value an AT command cannot carry: a quote,
    CR, LF, Ctrl-Z, Esc or NUL (checked here, at start-up, instead of failing every bring-up later)."""
    for key in keys:
        v = get(cfg, key)
        if isinstance(v, str):
            for c in _AT_UNSAFE:
                if c in v:
                    raise ConfigError(key, "holds a character an AT command cannot carry (quote, CR, LF, Ctrl-Z, "
                                           "Esc or NUL)")
