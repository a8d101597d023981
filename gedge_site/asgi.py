import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gedge_site.settings")
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

from .daphne_overhead import install as install_daphne_overhead  # noqa: E402
from .daphne_reaping import install as install_daphne_reaping  # noqa: E402
from .upload_bodies import install as install_upload_bodies  # noqa: E402

install_upload_bodies(settings.GEDGE_MAX_UPLOAD_BYTES)
install_daphne_reaping()
install_daphne_overhead()

from channels.auth import AuthMiddlewareStack  # noqa: E402 - needs Django set up first
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from jobs.readpath import FastJobReads  # noqa: E402
from jobs.readpath import enabled as fast_reads_enabled  # noqa: E402
from jobs.routing import websocket_urlpatterns  # noqa: E402

fast_reads = FastJobReads(django_asgi_app)
if settings.GEDGE_FAST_LANE and fast_reads_enabled():  # PostgreSQL and GEDGE_FAST_READS
    from .fast_lane import install as install_fast_lane

    install_fast_lane(fast_reads)

application = ProtocolTypeRouter(
    {
        "http": fast_reads,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# The web process answers small requests from a large, long-lived heap (Django, DRF, Channels, Twisted): a
# full garbage collection walks all of it, 150-200 ms on this box, and the requests behind it wait. Objects
# that exist once the application is built are frozen out of collection, and young collections run less
# often (docs/performance.md, "API latency"). GEDGE_WEB_GC_THRESHOLD="" keeps Python's defaults.
if settings.GEDGE_WEB_GC_THRESHOLD:
    gc.freeze()
    gc.set_threshold(*settings.GEDGE_WEB_GC_THRESHOLD)
