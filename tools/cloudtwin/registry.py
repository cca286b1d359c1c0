"""The twin's device registry, loaded from the ``--devices`` JSON file.

Huawei::

    {"devices": [{"device_id": "6203cc94c7fb24029b110408_88888888", "secret": "123456789"}]}

EnOS::

    {"products": [{"product_key": "pk1", "product_secret": "ps1", "dynamic": true}],
     "devices":  [{"product_key": "pk1", "device_key": "dk1", "device_secret": "ds1"},
                  {"product_key": "pk1", "device_key": "dk2"}]}     # dynamic, not yet activated

Device keys must be unique across products (the control socket names an EnOS device by its device key).
A malformed file raises ``DevicesFileError`` naming the entry and the field, never a secret's value.
"""

import json


class DevicesFileError(ValueError):
    pass


class HuaweiDevice:
    __slots__ = ("device_id", "name", "secret")

    def __init__(self, device_id, secret):
        self.name = device_id
        self.device_id = device_id
        self.secret = secret

    def describe(self):
        return {"device": self.name, "device_id": self.device_id}


class EnosProduct:
    __slots__ = ("dynamic", "product_key", "product_secret")

    def __init__(self, product_key, product_secret, dynamic):
        self.product_key = product_key
        self.product_secret = product_secret
        self.dynamic = dynamic


class EnosDevice:
    __slots__ = ("activated_by_twin", "device_key", "device_secret", "name", "product", "product_key")

    def __init__(self, product, device_key, device_secret):
        self.name = device_key
        self.product = product
        self.product_key = product.product_key
        self.device_key = device_key
        self.device_secret = device_secret  # None: a dynamic device that is not activated yet
        self.activated_by_twin = False

    def describe(self):
        return {"device": self.name, "product_key": self.product_key, "device_key": self.device_key,
                "dynamic": self.product.dynamic, "activated": self.device_secret is not None,
                "activated_by_twin": self.activated_by_twin}


def _str_field(entry, key, where, required=True):
    v = entry.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise DevicesFileError("%s: %r must be a non-empty string" % (where, key))
    return v


def _ident(value, where, key, forbidden):
    # Names end up in topics, usernames and (with mosquitto) in password/ACL files: refuse what would break them.
    bad = [c for c in forbidden if c in value] + (["whitespace"] if any(c.isspace() for c in value) else [])
    if bad:
        raise DevicesFileError("%s: %s %r contains %s" % (where, key, value, " ".join(repr(b) for b in bad)))
    return value


def load(path, cloud):
    """Read and validate the devices file -> {name: device}."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise DevicesFileError("cannot read devices file %s: %s" % (path, e.strerror)) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DevicesFileError("devices file %s is not valid JSON: %s" % (path, e)) from None
    if not isinstance(data, dict):
        raise DevicesFileError("devices file must hold a JSON object")
    return parse(data, cloud)


def parse(data, cloud):
    devices_in = data.get("devices")
    if not isinstance(devices_in, list):
        raise DevicesFileError("'devices' must be a list")
    out = {}
    if cloud == "huawei":
        for i, e in enumerate(devices_in):
            where = "devices[%d]" % i
            if not isinstance(e, dict):
                raise DevicesFileError("%s must be an object" % where)
            did = _ident(_str_field(e, "device_id", where), where, "device_id", "/+#:")
            if did in out:
                raise DevicesFileError("%s: device_id %r listed twice" % (where, did))
            out[did] = HuaweiDevice(did, _str_field(e, "secret", where))
        return out
    if cloud != "enos":
        raise DevicesFileError("unknown cloud %r" % cloud)
    products = {}
    for i, p in enumerate(data.get("products") or []):
        where = "products[%d]" % i
        if not isinstance(p, dict):
            raise DevicesFileError("%s must be an object" % where)
        pk = _ident(_str_field(p, "product_key", where), where, "product_key", "/+#&|")
        dynamic = p.get("dynamic", False)
        if not isinstance(dynamic, bool):
            raise DevicesFileError("%s: 'dynamic' must be true or false" % where)
        secret = _str_field(p, "product_secret", where, required=dynamic)
        products[pk] = EnosProduct(pk, secret, dynamic)
    for i, e in enumerate(devices_in):
        where = "devices[%d]" % i
        if not isinstance(e, dict):
            raise DevicesFileError("%s must be an object" % where)
        pk = _ident(_str_field(e, "product_key", where), where, "product_key", "/+#&|")
        if pk not in products:
            products[pk] = EnosProduct(pk, None, False)  # a static product needs no entry of its own
        product = products[pk]
        dk = _ident(_str_field(e, "device_key", where), where, "device_key", "/+#&|")
        if dk in out:
            raise DevicesFileError("%s: device_key %r listed twice (device keys must be unique)" % (where, dk))
        secret = _str_field(e, "device_secret", where, required=False)
        if secret is None and not product.dynamic:
            raise DevicesFileError("%s: 'device_secret' missing and product %r is not dynamic" % (where, pk))
        out[dk] = EnosDevice(product, dk, secret)
    return out
