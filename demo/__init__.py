"""The demo shop behind ``eventscope demo``: small services on RabbitMQ, instrumented as a user would.

``topology`` declares the exchange and queues, ``services`` holds the shop's services (each
runs in a process of its own, so each has its own ``service.name``), and ``runner`` starts
the collector and the services, prints what is happening and stops everything cleanly.
"""

__all__: list[str] = []
