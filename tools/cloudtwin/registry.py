"""The twin's device registry, loaded from the ``--devices`` JSON file.

Huawei (legacy ``--cloud huawei`` and ``--cloud iotda``)::

    {"model": {"services": {"Telemetry": {"temperature": "decimal", "seq": "int"}}},   # or per device
     "devices": [{"device_id": "6203cc94c7fb24029b110408_88888888", "secret": "123456789",
                  "node_id": "866425030000017"}]}    # node_id: legacy id type 2 logs in with it

Plain MQTT (``--cloud mqtt``)::

    {"devices": [{"client_id": "c1", "username": "u1", "password": "p1"}]}   # no username: none is checked

EnOS::

    {"model": {"measurepoints": {"temperature": "float"}},      # or per product / per device
     "products": [{"product_key": "pk1", "product_secret": "ps1", "dynamic": true}],
     "devices":  [{"product_key": "pk1", "device_key": "dk1", "device_secret": "ds1"},
                  {"product_key": "pk1", "device_key": "dk2"}]}     # dynamic, not yet activated

Device keys must be unique across products (the control socket names an EnOS device by its device key).
Huawei and EnOS devices need a product model (model.py): reports that do not fit it are refused the way the
cloud refuses them.
A malformed file raises ``DevicesFileError`` naming the entry and the field, never a secret's value.
"""

import json

from .model import ModelError, parse_enos, parse_huawei


class DevicesFileError(ValueError):
    pass


class HuaweiDevice:
    __slots__ = ("device_id", "model", "name", "node_id", "secret")

    def __init__(self, device_id, secret, model=None, node_id=None):
        self.name = device_id
        self.device_id = device_id
        self.secret = secret
        self.model = model  # {service id: {property: type}}
        self.node_id = node_id

    def describe(self):
        return {"device": self.name, "device_id": self.device_id, "node_id": self.node_id,
                "model": sorted(self.model) if self.model else None}


class PlainDevice:
    __slots__ = ("client_id", "name", "password", "username")

    def __init__(self, client_id, username, password):
        self.name = client_id
        self.client_id = client_id
        self.username = username
        self.password = password

    def describe(self):
        return {"device": self.name, "client_id": self.client_id}


class EnosProduct:
    __slots__ = ("dynamic", "model", "product_key", "product_secret")

    def __init__(self, product_key, product_secret, dynamic, model=None):
        self.product_key = product_key
        self.product_secret = product_secret
        self.dynamic = dynamic
        self.model = model  # {point: type}


class EnosDevice:
    __slots__ = ("activated_by_twin", "device_key", "device_secret", "model", "name", "product", "product_key")

    def __init__(self, product, device_key, device_secret, model=None):
        self.name = device_key
        self.product = product
        self.product_key = product.product_key
        self.device_key = device_key
        self.device_secret = device_secret  # None: a dynamic device that is not activated yet
        self.activated_by_twin = False
        self.model = model or product.model

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


def _model(entry, parse_fn, where, default):
    m = entry.get("model")
    if m is None:
        return default
    try:
        return parse_fn(m, where)
    except ModelError as e:
        raise DevicesFileError(str(e)) from None


def parse(data, cloud):
    devices_in = data.get("devices")
    if not isinstance(devices_in, list):
        raise DevicesFileError("'devices' must be a list")
    out = {}
    if cloud in ("huawei", "iotda"):
        top = _model(data, parse_huawei, "model", None)
        for i, e in enumerate(devices_in):
            where = "devices[%d]" % i
            if not isinstance(e, dict):
                raise DevicesFileError("%s must be an object" % where)
            did = _ident(_str_field(e, "device_id", where), where, "device_id", "/+#:")
            if did in out:
                raise DevicesFileError("%s: device_id %r listed twice" % (where, did))
            node = e.get("node_id")
            if node is not None:
                if cloud == "iotda":
                    raise DevicesFileError("%s: node_id: IoTDA logs in with the device id only" % where)
                node = _ident(_str_field(e, "node_id", where), where, "node_id", "/+#:_")
            secret = _str_field(e, "secret", where)
            model = _model(e, parse_huawei, where, top)
            if model is None:
                raise DevicesFileError("%s: no product model (model.services, here or at the top)" % where)
            out[did] = HuaweiDevice(did, secret, model, node)
        return out
    if cloud == "mqtt":
        for i, e in enumerate(devices_in):
            where = "devices[%d]" % i
            if not isinstance(e, dict):
                raise DevicesFileError("%s must be an object" % where)
            cid = _ident(_str_field(e, "client_id", where), where, "client_id", "/+#")
            if cid in out:
                raise DevicesFileError("%s: client_id %r listed twice" % (where, cid))
            user = _str_field(e, "username", where, required=False)
            out[cid] = PlainDevice(cid, user, _str_field(e, "password", where, required=user is not None))
        return out
    if cloud != "enos":
        raise DevicesFileError("unknown cloud %r" % cloud)
    top = _model(data, parse_enos, "model", None)
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
        products[pk] = EnosProduct(pk, secret, dynamic, _model(p, parse_enos, where, top))
    for i, e in enumerate(devices_in):
        where = "devices[%d]" % i
        if not isinstance(e, dict):
            raise DevicesFileError("%s must be an object" % where)
        pk = _ident(_str_field(e, "product_key", where), where, "product_key", "/+#&|")
        if pk not in products:
            products[pk] = EnosProduct(pk, None, False, top)  # a static product needs no entry of its own
        product = products[pk]
        dk = _ident(_str_field(e, "device_key", where), where, "device_key", "/+#&|")
        if dk in out:
            raise DevicesFileError("%s: device_key %r listed twice (device keys must be unique)" % (where, dk))
        secret = _str_field(e, "device_secret", where, required=False)
        if secret is None and not product.dynamic:
            raise DevicesFileError("%s: 'device_secret' missing and product %r is not dynamic" % (where, pk))
        d = EnosDevice(product, dk, secret, _model(e, parse_enos, where, None))
        if d.model is None:
            raise DevicesFileError("%s: no product model (model.measurepoints, here, on the product or at the "
                                   "top)" % where)
        out[dk] = d
    return out
