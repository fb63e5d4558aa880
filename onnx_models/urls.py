from django.urls import path

from onnx_models import views

urlpatterns = [
    path("transfers/uploads/<uuid:operation_id>/<int:index>", views.upload_part),
    path("transfers/downloads/<uuid:revision_id>/<str:sha256>/<int:index>", views.download_part),
]
