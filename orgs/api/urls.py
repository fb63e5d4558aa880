from django.urls import path

from orgs.api import views

urlpatterns = [
    path("users/me", views.UserMeApi.as_view()),
    path("users/me/orgs", views.UserMeOrgsApi.as_view()),
    path("auth/login", views.LoginApi.as_view()),
    path("auth/core/anonymous", views.AnonymousTokenApi.as_view()),
    path("auth/core/refresh", views.RefreshTokenApi.as_view()),
    path("orgs", views.OrganizationCreateApi.as_view()),
    path("orgs/<str:org>", views.OrganizationDetailApi.as_view()),
    path("orgs/<str:org>/members", views.MemberListApi.as_view()),
    path("orgs/<str:org>/members/<str:user_id>", views.MemberDetailApi.as_view()),
    path("orgs/<str:org>/api_keys", views.ApiKeyListApi.as_view()),
    path("orgs/<str:org>/api_keys/<str:key_id>", views.ApiKeyDetailApi.as_view()),
    path("orgs/<str:org>/credentials", views.CredentialListApi.as_view()),
    path("orgs/<str:org>/credentials/<str:alias>", views.CredentialDetailApi.as_view()),
]
