import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blobhub.settings")
django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application does, with our handler

from blobs.content.asgi_streaming import StreamingASGIHandler  # noqa: E402

django_asgi_app = StreamingASGIHandler()

# Imported once Django is set up: the consumer uses models.
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from blobs.realtime import EventsConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The consumer authenticates each connection itself: API key, bearer token, or the
        # console's session cookie from one of our own pages.
        "websocket": URLRouter([path("v1/ws", EventsConsumer.as_asgi())]),
    }
)

# Everything the server runs on is loaded now: set it aside from the garbage collector. A full
# collection otherwise walks all of it, and stalled every connection for 0.1-0.2 s a few times
# a minute under load (bench/ws_fanout.py); now only what is made from here on is scanned.
gc.freeze()
