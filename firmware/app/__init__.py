# The firmware application package (on a device: /app on flash, or frozen).
