# cellmqtt: connect a MicroPython device to MQTT clouds through a Quectel cellular modem over AT commands.
# Layers (one module each): at_engine -> bg96 / bc660k drivers -> transport -> cloud profiles (huawei, enos).
__version__ = "0.1.0"
