import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gedge_site.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402 - needs Django set up first
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from jobs.web.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# The web process answers small requests from a large, long-lived heap (Django, DRF, Channels, Twisted): a
# full garbage collection walks all of it, and the requests behind it wait. Objects that exist once the
# application is built are frozen out of collection, and young collections run less often
# (docs/performance.md, "Levers"). GEDGE_WEB_GC_THRESHOLD="" keeps Python's defaults.
if settings.GEDGE_WEB_GC_THRESHOLD:
    gc.freeze()
    gc.set_threshold(*settings.GEDGE_WEB_GC_THRESHOLD)
