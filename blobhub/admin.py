import functools

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from blobhub.api.throttling import login_refused
from blobhub.models import IdempotencyRecord


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ["created_at", "caller", "key", "state", "response_status"]
    search_fields = ["caller", "key"]
    readonly_fields = ["caller", "key", "fingerprint", "state", "response_status", "response_body", "created_at"]


def login_throttled(login):
    """Guesses at the admin password count against the per-address bucket of `/v1/auth/login`:
    otherwise the admin form would be the unlimited way to guess the superuser's password."""

    @functools.wraps(login)
    def view(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if request.method == "POST" and (wait := login_refused(request)) is not None:
            refused = HttpResponse("Too many login attempts: retry later.", status=429, content_type="text/plain")
            refused["Retry-After"] = str(wait)
            return refused
        return login(request, extra_context)

    return view


# Admin autodiscovery imports this module before the URLconf asks the site for its views.
admin.site.login = login_throttled(admin.site.login)
