"""Views for blobs, revisions, metadata, operations, blob access and the data channel."""

import json

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response

from blobhub.api.errors import AccessDenied, ApplicationError, InvalidRequest
from blobhub.api.parsers import unstorable
from blobhub.api.schema import ERRORS, IDEMPOTENCY_PARAMETER, IF_MATCH_PARAMETER, PAGE_PARAMETERS, envelope
from blobhub.api.serializers import is_uuid, parse
from blobhub.api.views import ApiKeyCreatingApi, ApiView, etag_header, if_match, paginated, success
from blobs import limits, policy, selectors
from blobs.api import serializers as s
from blobs.channel import BinaryAnswer, dispatch
from blobs.models import Blob, BlobMember, BlobMetadata, Revision, RevisionMetadata
from blobs.registry import limits_for
from blobs.services import access, blobs as blob_services, metadata as metadata_services, operations, revisions
from orgs import selectors as org_selectors, services as org_services
from orgs.authentication import principal_of
from orgs.models import ApiKey, Role

# --- Blobs ---------------------------------------------------------------------------------


class OrgBlobListApi(ApiView):
    @extend_schema(
        parameters=[*PAGE_PARAMETERS, OpenApiParameter("type", str)],
        responses={200: envelope("BlobList", "blobs", s.BlobOut, many=True), **ERRORS},
    )
    def get(self, request: Request, org: str) -> Response:
        principal = principal_of(request)
        query = parse(s.BlobListQuery, request.query_params)
        organization = selectors.organization_for_blobs(org)
        blobs = selectors.blob_list(principal, organization, query.get("type"))
        if not blobs.exists() and not org_selectors.holds_role(principal, organization):
            raise AccessDenied()  # an outsider learns nothing, not even that the org exists
        return paginated(request, blobs, "blobs", s.BlobOut, query=query)

    @extend_schema(
        request=s.BlobCreateIn,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: envelope("BlobEnvelope", "blob", s.BlobOut), **ERRORS},
    )
    def post(self, request: Request, org: str) -> Response:
        principal = principal_of(request)
        organization = org_selectors.organization_get(principal, org, Role.WRITE)
        data = parse(s.BlobCreateIn, request.data)
        blob = blob_services.blob_create(principal=principal, org=organization, **data)
        return success(201, etag_header(blob.etag), blob=s.BlobOut(blob).data)


class BlobDetailApi(ApiView):
    @extend_schema(responses={200: envelope("BlobEnvelope", "blob", s.BlobOut), **ERRORS})
    def get(self, request: Request, org: str, blob: str) -> Response:
        item = selectors.blob_get(principal_of(request), org, blob)
        return success(headers=etag_header(item.etag), blob=s.BlobOut(item).data)

    @extend_schema(
        request=s.BlobUpdateIn,
        parameters=[IF_MATCH_PARAMETER],
        responses={200: envelope("BlobEnvelope", "blob", s.BlobOut), **ERRORS},
    )
    def patch(self, request: Request, org: str, blob: str) -> Response:
        principal = principal_of(request)
        item = selectors.blob_get(principal, org, blob, Role.WRITE)
        data = parse(s.BlobUpdateIn, request.data)
        blob_services.blob_update(principal=principal, blob=item, changes=data, if_match=if_match(request))
        item.refresh_from_db()
        return success(headers=etag_header(item.etag), blob=s.BlobOut(item).data)

    @extend_schema(parameters=[IF_MATCH_PARAMETER], responses={200: envelope("Deleted"), **ERRORS})
    def delete(self, request: Request, org: str, blob: str) -> Response:
        principal = principal_of(request)
        item = selectors.blob_get(principal, org, blob, Role.WRITE)
        blob_services.blob_delete(principal=principal, blob=item, if_match=if_match(request))
        return success()


class BlobLimitsApi(ApiView):
    @extend_schema(responses={200: envelope("Limits"), **ERRORS})
    def get(self, request: Request, org: str, blob: str) -> Response:
        item = selectors.blob_get(principal_of(request), org, blob)
        ids = [*limits.CORE_LIMITS, *limits_for(item.type)]
        groups: dict[str, list] = {}
        for limit_id in ids:
            group = limit_id.split(".", 1)[0]
            groups.setdefault(group, []).append({"id": limit_id, "value": limits.value(limit_id)})
        return success(groups=[{"id": group, "limits": items} for group, items in groups.items()])


# --- Revisions ------------------------------------------------------------------------------


class BlobRevisionListApi(ApiView):
    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses={200: envelope("RevisionList", "revisions", s.RevisionOut, many=True), **ERRORS},
        operation_id="blobs_revisions_list",
    )
    def get(self, request: Request, org: str, blob: str) -> Response:
        principal = principal_of(request)
        item = selectors.blob_get(principal, org, blob)
        return paginated(request, selectors.revision_list(principal, item), "revisions", s.RevisionOut, newest_first=True)

    @extend_schema(request=s.CommentIn, parameters=[IDEMPOTENCY_PARAMETER], responses={201: envelope("RevisionCreated"), **ERRORS})
    def post(self, request: Request, org: str, blob: str) -> Response:
        principal = principal_of(request)
        item = selectors.blob_get(principal, org, blob, Role.WRITE)
        data = parse(s.CommentIn, request.data)
        revision = revisions.revision_create(principal=principal, blob=item, comment=data["comment"])
        return success(201, revision_id=str(revision.id))


class BlobRevisionDetailApi(ApiView):
    @extend_schema(responses={200: envelope("RevisionEnvelope", "revision", s.RevisionOut), **ERRORS})
    def get(self, request: Request, org: str, blob: str, ref: str) -> Response:
        principal = principal_of(request)
        item = selectors.blob_get(principal, org, blob)
        revision = selectors.revision_in_blob(principal, item, ref)
        return success(revision=s.RevisionOut(revision).data)


class RevisionApi(ApiView):
    @extend_schema(responses={200: envelope("RevisionEnvelope", "revision", s.RevisionOut), **ERRORS})
    def get(self, request: Request, revision_id: str) -> Response:
        revision = selectors.revision_get(principal_of(request), revision_id)
        return success(revision=s.RevisionOut(revision).data)

    @extend_schema(responses={200: envelope("Deleted"), **ERRORS})
    def delete(self, request: Request, revision_id: str) -> Response:
        principal = principal_of(request)
        revision = selectors.revision_get(principal, revision_id, Role.WRITE)
        revisions.revision_delete(principal=principal, revision=revision)
        return success()


class RevisionCommitApi(ApiView):
    @extend_schema(
        request=s.OptionalCommentIn, parameters=[IDEMPOTENCY_PARAMETER], responses={200: envelope("OperationStarted"), **ERRORS}
    )
    def post(self, request: Request, revision_id: str) -> Response:
        principal = principal_of(request)
        revision = selectors.revision_get(principal, revision_id, Role.WRITE)
        data = parse(s.OptionalCommentIn, request.data)
        operation = revisions.revision_commit_start(principal=principal, revision=revision, comment=data.get("comment"))
        return success(operation_id=str(operation.id))


class RevisionSnapshotApi(ApiView):
    @extend_schema(request=s.OptionalCommentIn, responses={200: envelope("RevisionEnvelope", "revision", s.RevisionOut), **ERRORS})
    def post(self, request: Request, revision_id: str) -> Response:
        principal = principal_of(request)
        revision = selectors.revision_get(principal, revision_id, Role.WRITE)
        data = parse(s.OptionalCommentIn, request.data)
        revision = revisions.revision_snapshot(principal=principal, revision=revision, comment=data.get("comment"))
        return success(revision=s.RevisionOut(revision).data)


# --- Metadata ---------------------------------------------------------------------------------


class _MetadataBase(ApiView):
    """Shared by blob and revision metadata; subclasses say how to find the owner."""

    model: type
    out: type

    def owner(self, request: Request, needs: Role, **kwargs) -> Blob | Revision:
        raise NotImplementedError

    def items(self, owner):
        field = "blob" if isinstance(owner, Blob) else "revision"
        return self.model.objects.filter(**{field: owner})

    def item(self, owner, key: str):
        found = self.items(owner).filter(key=s.metadata_key(key)).first()
        if found is None:
            raise ApplicationError("metadata_not_found", f"There is no metadata key {key!r}.", status=404)
        return found


class _MetadataListApi(_MetadataBase):
    def get(self, request: Request, **kwargs) -> Response:
        owner = self.owner(request, Role.READ, **kwargs)
        return paginated(request, self.items(owner), "metadata", self.out)

    def post(self, request: Request, **kwargs) -> Response:
        principal = principal_of(request)
        owner = self.owner(request, Role.WRITE, **kwargs)
        data = parse(s.MetadataCreateIn, request.data)
        item = metadata_services.metadata_create(principal=principal, owner=owner, **data)
        return success(201, etag_header(item.etag), metadata=self.out(item).data)


class _MetadataDetailApi(_MetadataBase):
    def get(self, request: Request, key: str, **kwargs) -> Response:
        item = self.item(self.owner(request, Role.READ, **kwargs), key)
        return success(headers=etag_header(item.etag), metadata=self.out(item).data)

    def put(self, request: Request, key: str, **kwargs) -> Response:
        principal = principal_of(request)
        owner = self.owner(request, Role.WRITE, **kwargs)
        data = parse(s.MetadataPutIn, request.data)
        item, created = metadata_services.metadata_put(
            principal=principal, owner=owner, key=s.metadata_key(key), value=data["value"], if_match=if_match(request)
        )
        return success(201 if created else 200, etag_header(item.etag), metadata=self.out(item).data)

    def delete(self, request: Request, key: str, **kwargs) -> Response:
        principal = principal_of(request)
        owner = self.owner(request, Role.WRITE, **kwargs)
        metadata_services.metadata_delete(principal=principal, owner=owner, item=self.item(owner, key), if_match=if_match(request))
        return success()


class _BlobOwned:
    model, out = BlobMetadata, s.BlobMetadataOut

    def owner(self, request: Request, needs: Role, org: str, blob: str) -> Blob:
        return selectors.blob_get(principal_of(request), org, blob, needs)


class _RevisionOwned:
    model, out = RevisionMetadata, s.RevisionMetadataOut

    def owner(self, request: Request, needs: Role, revision_id: str) -> Revision:
        return selectors.revision_get(principal_of(request), revision_id, needs)


@extend_schema(
    request=s.MetadataCreateIn,
    responses={200: envelope("BlobMetadataList", "metadata", s.BlobMetadataOut, many=True), **ERRORS},
)
@extend_schema_view(get=extend_schema(operation_id="blobs_metadata_list", parameters=PAGE_PARAMETERS))
class BlobMetadataListApi(_BlobOwned, _MetadataListApi):
    pass


@extend_schema(request=s.MetadataPutIn, responses={200: envelope("BlobMetadataEnvelope", "metadata", s.BlobMetadataOut), **ERRORS})
class BlobMetadataDetailApi(_BlobOwned, _MetadataDetailApi):
    pass


@extend_schema(
    request=s.MetadataCreateIn,
    responses={200: envelope("RevisionMetadataList", "metadata", s.RevisionMetadataOut, many=True), **ERRORS},
)
@extend_schema_view(get=extend_schema(operation_id="revisions_metadata_list", parameters=PAGE_PARAMETERS))
class RevisionMetadataListApi(_RevisionOwned, _MetadataListApi):
    pass


@extend_schema(
    request=s.MetadataPutIn, responses={200: envelope("RevisionMetadataEnvelope", "metadata", s.RevisionMetadataOut), **ERRORS}
)
class RevisionMetadataDetailApi(_RevisionOwned, _MetadataDetailApi):
    pass


class RevisionMetadataResolveApi(ApiView):
    @extend_schema(responses={200: envelope("MetadataResolved"), **ERRORS})
    def get(self, request: Request, revision_id: str, key: str) -> Response:
        revision = selectors.revision_get(principal_of(request), revision_id)
        key = s.metadata_key(key)
        item = RevisionMetadata.objects.filter(revision=revision, key=key).first()
        if item is not None:
            return success(metadata=s.RevisionMetadataOut(item).data, source="revision")
        item = BlobMetadata.objects.filter(blob_id=revision.blob_id, key=key).first()
        if item is not None:
            return success(metadata=s.BlobMetadataOut(item).data, source="blob")
        raise ApplicationError("metadata_not_found", f"Neither the revision nor its blob has {key!r}.", status=404)


# --- Operations ---------------------------------------------------------------------------------


class OperationApi(ApiView):
    @extend_schema(responses={200: envelope("OperationEnvelope", "operation", s.OperationOut), **ERRORS})
    def get(self, request: Request, operation_id: str) -> Response:
        operation = selectors.operation_get(principal_of(request), operation_id)
        return success(operation=s.OperationOut(operation).data)


class OperationCancelApi(ApiView):
    @extend_schema(request=None, responses={200: envelope("OperationEnvelope", "operation", s.OperationOut), **ERRORS})
    def post(self, request: Request, operation_id: str) -> Response:
        principal = principal_of(request)
        operation = selectors.operation_get(principal, operation_id, Role.WRITE)
        operation = operations.operation_cancel(principal=principal, operation=operation)
        return success(operation=s.OperationOut(operation).data)


# --- The data channel ---------------------------------------------------------------------------


class _JsonAnswers(DefaultContentNegotiation):
    """JSON for whatever DRF renders: `_binary` answers bytes itself, so `Accept:
    application/octet-stream` must reach the view rather than end in DRF's 406."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class _DataChannelApi(ApiView):
    mode: str
    content_negotiation_class = _JsonAnswers

    @extend_schema(request=None, responses={200: envelope("DataChannelAnswer"), **ERRORS})
    def post(self, request: Request, revision_id: str):
        principal = principal_of(request)
        revision = selectors.revision_get(principal, revision_id)
        args, body = self._arguments(request)
        command = args.pop("command", None)
        if not isinstance(command, str) or not command:
            raise InvalidRequest("Name the command: {\"command\": \"...\"}.", [{"path": "command", "message": "Required string."}])
        base_url = settings.PUBLIC_BASE_URL or request.build_absolute_uri("/")
        answer = dispatch(
            principal=principal, revision=revision, mode=self.mode, command=command, args=args, body=body, base_url=base_url
        )
        if isinstance(answer, BinaryAnswer):
            return self._binary(request, answer)
        # Not success(**answer): check_definition answers its own `status` (valid/invalid).
        return Response({"status": "success", **answer})

    def _arguments(self, request: Request) -> tuple[dict, object]:
        if request.content_type.startswith("application/octet-stream"):
            try:
                args = json.loads(request.META.get("HTTP_X_REQUEST_BODY") or "{}")
            except (ValueError, RecursionError):
                raise InvalidRequest("X-Request-Body is not valid JSON.") from None
            if (problem := unstorable(args)) is not None:
                raise InvalidRequest(f"X-Request-Body: {problem}")
            body = request._request
        else:
            args, body = request.data, None
        if not isinstance(args, dict):
            raise InvalidRequest("The arguments must be a JSON object.")
        return dict(args), body

    def _binary(self, request: Request, answer: BinaryAnswer):
        envelope_body = {"status": "success", **answer.envelope}
        if "application/octet-stream" not in request.META.get("HTTP_ACCEPT", ""):
            raise ApplicationError(
                "not_acceptable", "This query answers bytes: send Accept: application/octet-stream.", status=406
            )
        response = StreamingHttpResponse(answer.chunks, content_type="application/octet-stream")
        response["X-Response-Body"] = json.dumps(envelope_body, separators=(",", ":"))
        if answer.size is not None:
            response["Content-Length"] = str(answer.size)
        if answer.filename:
            response["Content-Disposition"] = f'attachment; filename="{answer.filename}"'
        return response


class RevisionDataQueryApi(_DataChannelApi):
    mode = "query"


class RevisionDataCommandApi(_DataChannelApi):
    mode = "command"


# --- Blob members and blob API keys ----------------------------------------------------------------


class BlobMemberListApi(ApiView):
    @extend_schema(parameters=PAGE_PARAMETERS, responses={200: envelope("BlobMemberList", "members", s.BlobMemberOut, many=True), **ERRORS})
    def get(self, request: Request, org: str, blob: str) -> Response:
        item = selectors.blob_get(principal_of(request), org, blob)
        if policy.reads_as_public(principal_of(request), item):
            raise AccessDenied()
        return paginated(request, BlobMember.objects.filter(blob=item).select_related("user"), "members", s.BlobMemberOut)

    @extend_schema(request=s.BlobMemberCreateIn, responses={201: envelope("BlobMemberEnvelope", "member", s.BlobMemberOut), **ERRORS})
    def post(self, request: Request, org: str, blob: str) -> Response:
        principal = principal_of(request)
        item = selectors.blob_get(principal, org, blob, Role.ADMIN)
        data = parse(s.BlobMemberCreateIn, request.data)
        member = access.blob_member_add(principal=principal, blob=item, user_id=str(data["user_id"]), role=data["role"])
        return success(201, etag_header(member.etag), member=s.BlobMemberOut(member).data)


class BlobMemberDetailApi(ApiView):
    def _member(self, blob: Blob, user_id: str) -> BlobMember:
        member = BlobMember.objects.filter(blob=blob, user_id=user_id).first() if is_uuid(user_id) else None
        if member is None:
            raise AccessDenied()
        return member

    @extend_schema(request=s.BlobMemberUpdateIn, responses={200: envelope("BlobMemberEnvelope", "member", s.BlobMemberOut), **ERRORS})
    def patch(self, request: Request, org: str, blob: str, user_id: str) -> Response:
        principal = principal_of(request)
        item = selectors.blob_get(principal, org, blob, Role.ADMIN)
        member = self._member(item, user_id)
        data = parse(s.BlobMemberUpdateIn, request.data)
        access.blob_member_update(principal=principal, blob=item, member=member, role=data["role"], if_match=if_match(request))
        return success(headers=etag_header(member.etag), member=s.BlobMemberOut(member).data)

    @extend_schema(parameters=[IF_MATCH_PARAMETER], responses={200: envelope("Deleted"), **ERRORS})
    def delete(self, request: Request, org: str, blob: str, user_id: str) -> Response:
        principal = principal_of(request)
        item = selectors.blob_get(principal, org, blob, Role.ADMIN)
        access.blob_member_remove(principal=principal, blob=item, member=self._member(item, user_id), if_match=if_match(request))
        return success()


class BlobApiKeyListApi(ApiKeyCreatingApi):
    @extend_schema(parameters=PAGE_PARAMETERS, responses={200: envelope("BlobApiKeyList", "api_keys", s.BlobApiKeyOut, many=True), **ERRORS})
    def get(self, request: Request, org: str, blob: str) -> Response:
        item = selectors.blob_get(principal_of(request), org, blob, Role.ADMIN)
        keys = ApiKey.objects.filter(blob=item, revoked_at__isnull=True)
        return paginated(request, keys, "api_keys", s.BlobApiKeyOut)

    @extend_schema(
        request=s.BlobApiKeyCreateIn, responses={201: envelope("BlobApiKeyCreated", "api_key", s.BlobApiKeyCreatedOut), **ERRORS}
    )
    def post(self, request: Request, org: str, blob: str) -> Response:
        principal = principal_of(request)
        item = selectors.blob_get(principal, org, blob, Role.ADMIN)
        data = parse(s.BlobApiKeyCreateIn, request.data)
        api_key, secret = org_services.api_key_create(principal=principal, org=item.org, blob=item, **data)
        return self.created(api_key, secret, s.BlobApiKeyCreatedOut)


class BlobApiKeyDetailApi(ApiView):
    @extend_schema(responses={200: envelope("Revoked"), **ERRORS})
    def delete(self, request: Request, org: str, blob: str, key_id: str) -> Response:
        principal = principal_of(request)
        item = selectors.blob_get(principal, org, blob, Role.ADMIN)
        api_key = ApiKey.objects.filter(blob=item, id=key_id, revoked_at__isnull=True).first() if is_uuid(key_id) else None
        if api_key is None:
            raise AccessDenied()
        org_services.api_key_revoke(principal=principal, org=item.org, api_key=api_key)
        return success()
