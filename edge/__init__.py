"""digitspot edge runtime: runs on a Raspberry Pi without torch.

Data flows one way: audio source -> frames -> VAD segments -> classifier scores -> digit events -> MQTT.
This package also owns the model card schema that the training side writes (see ``digitspot.edge.card``).
"""

__version__ = "0.1.0"
