"""Product models for the twin: what a cloud console defines for a product, and the check the platform applies to
every report (docs/cloudtwin.md "Product model").

Huawei (legacy profile / IoTDA product model): services, each with typed properties. The types are the
console's data types (IoTDA "Product Model" / legacy profile: int, long, decimal, string, DateTime,
jsonObject, enum, boolean, string list). The platform "stores the data that complies with the product model
definition" (IoTDA user guide iot_01_0326); data that does not fit is not stored and nothing goes back to the
device.

EnOS: measure points with a data type (EnOS thing model: int, float, double, string, enum, bool, array,
struct, timestamp, date). A post naming a point the model lacks is refused with code 1204 (the EnOS Node SDK's
integration tests expect 1204 when "part of the provided measurepoints are not defined in corresponding model").
A value of the wrong type is refused the same way (inferred: no source gives a distinct code).

A model is declared in the devices file, per device or once for all (``"model"`` at the top level).
"""


class ModelError(ValueError):
    """A model in the devices file that cannot be used (an unknown type, a wrong shape)."""


def _is_int(v):
    return type(v) is int


def _is_number(v):
    return type(v) in (int, float)


def _is_str(v):
    return type(v) is str


def _is_bool(v):
    return type(v) is bool


def _is_obj(v):
    return type(v) is dict


def _is_str_list(v):
    return type(v) is list and all(type(x) is str for x in v)


def _is_list(v):
    return type(v) is list


HUAWEI_TYPES = {"int": _is_int, "long": _is_int, "decimal": _is_number, "string": _is_str, "DateTime": _is_str,
                "jsonObject": _is_obj, "enum": _is_str, "boolean": _is_bool, "string list": _is_str_list}
ENOS_TYPES = {"int": _is_int, "float": _is_number, "double": _is_number, "string": _is_str, "enum": _is_str,
              "bool": _is_bool, "array": _is_list, "struct": _is_obj, "timestamp": _is_int, "date": _is_str}


def parse_huawei(model, where):
    """{"services": {service id: {property: type}}} -> the same dict, checked."""
    services = model.get("services") if isinstance(model, dict) else None
    if not isinstance(services, dict) or not services:
        raise ModelError("%s: model needs services: {service id: {property: type}}" % where)
    for sid, props in services.items():
        if not isinstance(props, dict) or not props:
            raise ModelError("%s: model service %r needs {property: type}" % (where, sid))
        for name, t in props.items():
            if t not in HUAWEI_TYPES:
                raise ModelError("%s: model %s.%s: type %r is not one of %s" % (where, sid, name, t,
                                                                                ", ".join(HUAWEI_TYPES)))
    return services


def parse_enos(model, where):
    """{"measurepoints": {point: type}} -> the points dict, checked."""
    points = model.get("measurepoints") if isinstance(model, dict) else None
    if not isinstance(points, dict) or not points:
        raise ModelError("%s: model needs measurepoints: {point: type}" % where)
    for name, t in points.items():
        if t not in ENOS_TYPES:
            raise ModelError("%s: model point %r: type %r is not one of %s" % (where, name, t, ", ".join(ENOS_TYPES)))
    return points


def check_properties(props, values, types, what="property"):
    """None when every value is declared and of its type; else why not."""
    for name, v in values.items():
        t = props.get(name)
        if t is None:
            return "%s %r is not in the product model" % (what, name)
        if not types[t](v):
            return "%s %r: %r is not of the model's type %s" % (what, name, v, t)
    return None


def check_huawei_service(services, service_id, values):
    props = services.get(service_id)
    if props is None:
        return "service %r is not in the product model" % service_id
    return check_properties(props, values, HUAWEI_TYPES)


def check_enos_points(points, values):
    return check_properties(points, values, ENOS_TYPES, "measure point")
