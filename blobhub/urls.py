from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from blobhub.api import views as api_views
from blobhub.health import healthz
from blobs.content import urls as content_urls

v1 = [
    path("", include("orgs.api.urls")),
    path("", include("blobs.api.urls")),
    path("", include(content_urls.rpc_urlpatterns)),
    path("", include("onnx_models.urls")),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # Unknown routes under /v1/ answer in the envelope even with DEBUG on.
    re_path(r"^.*$", api_views.not_found),
]

urlpatterns = [
    path("v1/", include(v1)),
    # The Stepflow BlobService, at the base its clients expect (API.md §5).
    path("api/v1/", include(content_urls)),
    path("healthz", healthz),
    path("admin/", admin.site.urls),
    path("console/", include("blobhub.console.urls")),
]

handler400 = "blobhub.api.views.bad_request"
handler403 = "blobhub.api.views.permission_denied"
handler404 = "blobhub.api.views.not_found"
handler500 = "blobhub.api.views.server_error"
