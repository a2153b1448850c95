"""ASGI entry point: HTTP (the pages, the async view) and the WebSocket lobby.

Run it with ``daphne django_site.asgi:application`` (see README.md).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
http = get_asgi_application()  # sets Django up before the consumers are imported

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402
from pageviews.consumers import LobbyConsumer  # noqa: E402

application = ProtocolTypeRouter({
    "http": http,
    "websocket": URLRouter([path("ws/lobby/", LobbyConsumer.as_asgi())]),
})
