"""Views: parse input, call one selector or service, render (STYLE.md)."""

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from blobhub.api.errors import ApplicationError
from blobhub.api.schema import ERRORS, IDEMPOTENCY_PARAMETER, IF_MATCH_PARAMETER, PAGE_PARAMETERS, envelope
from blobhub.api.serializers import parse
from blobhub.api.throttling import LoginRateThrottle
from blobhub.api.views import ApiKeyCreatingApi, ApiView, etag_header, if_match, paginated, success
from orgs import selectors, services, tokens
from orgs.api import serializers as s
from orgs.authentication import principal_of
from orgs.models import Role, User


def _bad_login() -> ApplicationError:
    return ApplicationError("unauthenticated", "The username or password is wrong.", status=401)


# --- Users and authentication ------------------------------------------------------------


class UserMeApi(ApiView):
    @extend_schema(responses={200: envelope("UserEnvelope", "user", s.UserOut), **ERRORS})
    def get(self, request: Request) -> Response:
        principal = principal_of(request)
        if principal.user is None:
            raise ApplicationError("access_denied", "An anonymous token has no user.", status=403)
        return success(user=s.UserOut(principal.user).data)


class UserMeOrgsApi(ApiView):
    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses={200: envelope("OrganizationList", "organizations", s.OrganizationOut, many=True), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        queryset = selectors.organization_list_for_user(principal_of(request))
        return paginated(request, queryset, "organizations", s.OrganizationOut)


class _TokenApi(ApiView):
    """A token route: no credentials needed (an expired token must not stand in the way of a
    refresh), and no `Idempotency-Key`: minting another pair changes nothing, and a replay
    would have to store the tokens, which are secrets."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    honours_idempotency_key = False


class LoginApi(_TokenApi):
    throttle_classes = [LoginRateThrottle]

    @extend_schema(request=s.LoginIn, responses={200: s.TokenPairOut, **ERRORS})
    def post(self, request: Request) -> Response:
        data = parse(s.LoginIn, request.data)
        user = authenticate(request._request, username=data["username"], password=data["password"])
        if user is None:
            raise _bad_login()
        return success(**tokens.issue_pair(user=user))


class AnonymousTokenApi(_TokenApi):
    @extend_schema(responses={200: s.TokenPairOut, **ERRORS})
    def get(self, request: Request) -> Response:
        return success(**tokens.issue_pair())


class RefreshTokenApi(_TokenApi):
    @extend_schema(request=s.RefreshIn, responses={200: s.TokenPairOut, **ERRORS})
    def post(self, request: Request) -> Response:
        data = parse(s.RefreshIn, request.data)
        try:
            claims = tokens.read(data["refresh_token"], tokens.REFRESH)
        except tokens.InvalidToken:
            raise ApplicationError("unauthenticated", "The refresh token is invalid or expired.", status=401)
        if claims.user_id is None:
            return success(**tokens.issue_pair(anonymous_id=claims.anonymous_id))
        user = User.objects.filter(id=claims.user_id).first()
        if user is None or not tokens.user_matches(claims, user):
            raise ApplicationError("unauthenticated", "The refresh token is invalid or expired.", status=401)
        return success(**tokens.issue_pair(user=user))


# --- Organizations -------------------------------------------------------------------------


class OrganizationCreateApi(ApiView):
    @extend_schema(
        request=s.OrganizationCreateIn,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: envelope("OrganizationEnvelope", "organization", s.OrganizationOut), **ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = parse(s.OrganizationCreateIn, request.data)
        org = services.organization_create(principal=principal_of(request), **data)
        return success(201, etag_header(org.etag), organization=s.OrganizationOut(org).data)


class OrganizationDetailApi(ApiView):
    @extend_schema(responses={200: envelope("OrganizationEnvelope", "organization", s.OrganizationOut), **ERRORS})
    def get(self, request: Request, org: str) -> Response:
        organization = selectors.organization_get(principal_of(request), org)
        return success(headers=etag_header(organization.etag), organization=s.OrganizationOut(organization).data)

    @extend_schema(
        request=s.OrganizationUpdateIn,
        parameters=[IF_MATCH_PARAMETER],
        responses={200: envelope("OrganizationEnvelope", "organization", s.OrganizationOut), **ERRORS},
    )
    def patch(self, request: Request, org: str) -> Response:
        principal = principal_of(request)
        organization = selectors.organization_get(principal, org, Role.ADMIN)
        data = parse(s.OrganizationUpdateIn, request.data)
        services.organization_update(principal=principal, org=organization, if_match=if_match(request), changes=data)
        return success(headers=etag_header(organization.etag), organization=s.OrganizationOut(organization).data)


# --- Members ----------------------------------------------------------------------------------


class MemberListApi(ApiView):
    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses={200: envelope("MemberList", "members", s.MemberOut, many=True), **ERRORS},
    )
    def get(self, request: Request, org: str) -> Response:
        organization = selectors.organization_get(principal_of(request), org)
        return paginated(request, selectors.member_list(organization), "members", s.MemberOut)

    @extend_schema(
        request=s.MemberCreateIn,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: envelope("MemberEnvelope", "member", s.MemberOut), **ERRORS},
    )
    def post(self, request: Request, org: str) -> Response:
        principal = principal_of(request)
        organization = selectors.organization_get(principal, org, Role.ADMIN)
        data = parse(s.MemberCreateIn, request.data)
        member = services.member_add(
            principal=principal, org=organization, user_id=str(data["user_id"]), role=data["role"]
        )
        return success(201, etag_header(member.etag), member=s.MemberOut(member).data)


class MemberDetailApi(ApiView):
    @extend_schema(
        request=s.MemberUpdateIn,
        parameters=[IF_MATCH_PARAMETER],
        responses={200: envelope("MemberEnvelope", "member", s.MemberOut), **ERRORS},
    )
    def patch(self, request: Request, org: str, user_id: str) -> Response:
        principal = principal_of(request)
        organization = selectors.organization_get(principal, org, Role.ADMIN)
        member = selectors.member_get(organization, user_id)
        data = parse(s.MemberUpdateIn, request.data)
        services.member_update(
            principal=principal, org=organization, member=member, role=data["role"], if_match=if_match(request)
        )
        return success(headers=etag_header(member.etag), member=s.MemberOut(member).data)

    @extend_schema(parameters=[IF_MATCH_PARAMETER], responses={200: envelope("Deleted"), **ERRORS})
    def delete(self, request: Request, org: str, user_id: str) -> Response:
        principal = principal_of(request)
        organization = selectors.organization_get(principal, org, Role.ADMIN)
        member = selectors.member_get(organization, user_id)
        services.member_remove(principal=principal, org=organization, member=member, if_match=if_match(request))
        return success()


# --- API keys ----------------------------------------------------------------------------------


class ApiKeyListApi(ApiKeyCreatingApi):
    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses={200: envelope("ApiKeyList", "api_keys", s.ApiKeyOut, many=True), **ERRORS},
    )
    def get(self, request: Request, org: str) -> Response:
        organization = selectors.organization_get(principal_of(request), org, Role.ADMIN)
        return paginated(request, selectors.api_key_list(organization), "api_keys", s.ApiKeyOut)

    @extend_schema(
        request=s.ApiKeyCreateIn,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: envelope("ApiKeyCreated", "api_key", s.ApiKeyCreatedOut), **ERRORS},
    )
    def post(self, request: Request, org: str) -> Response:
        principal = principal_of(request)
        organization = selectors.organization_get(principal, org, Role.ADMIN)
        data = parse(s.ApiKeyCreateIn, request.data)
        api_key, secret = services.api_key_create(principal=principal, org=organization, **data)
        return self.created(api_key, secret, s.ApiKeyCreatedOut)


class ApiKeyDetailApi(ApiView):
    @extend_schema(responses={200: envelope("Revoked"), **ERRORS})
    def delete(self, request: Request, org: str, key_id: str) -> Response:
        principal = principal_of(request)
        organization = selectors.organization_get(principal, org, Role.ADMIN)
        api_key = selectors.api_key_get(organization, key_id)
        services.api_key_revoke(principal=principal, org=organization, api_key=api_key)
        return success()


# --- Credentials ------------------------------------------------------------------------------


class CredentialListApi(ApiView):
    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses={200: envelope("CredentialList", "credentials", s.CredentialOut, many=True), **ERRORS},
        operation_id="orgs_credentials_list",
    )
    def get(self, request: Request, org: str) -> Response:
        organization = selectors.organization_get(principal_of(request), org, Role.WRITE)
        return paginated(request, selectors.credential_list(organization), "credentials", s.CredentialOut)

    @extend_schema(
        request=s.CredentialCreateIn,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: envelope("CredentialEnvelope", "credential", s.CredentialOut), **ERRORS},
    )
    def post(self, request: Request, org: str) -> Response:
        principal = principal_of(request)
        organization = selectors.organization_get(principal, org, Role.ADMIN)
        data = parse(s.CredentialCreateIn, request.data)
        credential = services.credential_create(principal=principal, org=organization, **data)
        return success(201, etag_header(credential.etag), credential=s.CredentialOut(credential).data)


class CredentialDetailApi(ApiView):
    @extend_schema(responses={200: envelope("CredentialEnvelope", "credential", s.CredentialOut), **ERRORS})
    def get(self, request: Request, org: str, alias: str) -> Response:
        organization = selectors.organization_get(principal_of(request), org, Role.WRITE)
        credential = selectors.credential_get(organization, alias)
        return success(headers=etag_header(credential.etag), credential=s.CredentialOut(credential).data)

    @extend_schema(
        request=s.CredentialReplaceIn,
        parameters=[IF_MATCH_PARAMETER],
        responses={200: envelope("CredentialEnvelope", "credential", s.CredentialOut), **ERRORS},
    )
    def put(self, request: Request, org: str, alias: str) -> Response:
        principal = principal_of(request)
        organization = selectors.organization_get(principal, org, Role.ADMIN)
        credential = selectors.credential_get(organization, alias)
        data = parse(s.CredentialReplaceIn, request.data)
        services.credential_replace(
            principal=principal,
            org=organization,
            credential=credential,
            provider=data["provider"],
            value=data["value"],
            description=data.get("description", ""),
            if_match=if_match(request),
        )
        return success(headers=etag_header(credential.etag), credential=s.CredentialOut(credential).data)

    @extend_schema(parameters=[IF_MATCH_PARAMETER], responses={200: envelope("Deleted"), **ERRORS})
    def delete(self, request: Request, org: str, alias: str) -> Response:
        principal = principal_of(request)
        organization = selectors.organization_get(principal, org, Role.ADMIN)
        credential = selectors.credential_get(organization, alias)
        services.credential_delete(principal=principal, org=organization, credential=credential, if_match=if_match(request))
        return success()
