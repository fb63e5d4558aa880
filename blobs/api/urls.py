from django.urls import path

from blobs.api import views

urlpatterns = [
    path("orgs/<str:org>/blobs", views.OrgBlobListApi.as_view()),
    path("blobs/<str:org>/<str:blob>", views.BlobDetailApi.as_view()),
    path("blobs/<str:org>/<str:blob>/limits", views.BlobLimitsApi.as_view()),
    path("blobs/<str:org>/<str:blob>/revisions", views.BlobRevisionListApi.as_view()),
    path("blobs/<str:org>/<str:blob>/revisions/<str:ref>", views.BlobRevisionDetailApi.as_view()),
    path("blobs/<str:org>/<str:blob>/metadata", views.BlobMetadataListApi.as_view()),
    path("blobs/<str:org>/<str:blob>/metadata/<str:key>", views.BlobMetadataDetailApi.as_view()),
    path("blobs/<str:org>/<str:blob>/members", views.BlobMemberListApi.as_view()),
    path("blobs/<str:org>/<str:blob>/members/<str:user_id>", views.BlobMemberDetailApi.as_view()),
    path("blobs/<str:org>/<str:blob>/api_keys", views.BlobApiKeyListApi.as_view()),
    path("blobs/<str:org>/<str:blob>/api_keys/<str:key_id>", views.BlobApiKeyDetailApi.as_view()),
    path("revisions/<str:revision_id>", views.RevisionApi.as_view()),
    path("revisions/<str:revision_id>/commit", views.RevisionCommitApi.as_view()),
    path("revisions/<str:revision_id>/snapshot", views.RevisionSnapshotApi.as_view()),
    path("revisions/<str:revision_id>/metadata", views.RevisionMetadataListApi.as_view()),
    path("revisions/<str:revision_id>/metadata/<str:key>", views.RevisionMetadataDetailApi.as_view()),
    path("revisions/<str:revision_id>/metadata/<str:key>/resolve", views.RevisionMetadataResolveApi.as_view()),
    path("revisions/<str:revision_id>/data/query", views.RevisionDataQueryApi.as_view()),
    path("revisions/<str:revision_id>/data/command", views.RevisionDataCommandApi.as_view()),
    path("operations/<str:operation_id>", views.OperationApi.as_view()),
    path("operations/<str:operation_id>/cancel", views.OperationCancelApi.as_view()),
]
