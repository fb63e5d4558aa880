"""Routes of the content surfaces: Stepflow's under /api/v1/, the Skills RPC under /v1/."""

from django.urls import path

from blobs.content import rpc, views

# Included at /api/v1/ (the Stepflow BlobService's base).
urlpatterns = [
    path("blobs", views.BlobStoreApi.as_view()),
    path("blobs/<str:blob_id>", views.BlobDetailApi.as_view()),
]

# Included in the /v1/ routes.
rpc_urlpatterns = [
    path("rpc", rpc.RpcApi.as_view()),
]
