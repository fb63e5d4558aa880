"""The console's pages. Everything past the login is the single page (static/console/console.js),
which calls /v1/ with the session cookie and the CSRF token, as any other client would."""

from urllib.parse import urlsplit

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView, LogoutView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse_lazy
from django.views.decorators.csrf import ensure_csrf_cookie

from blobhub.api.throttling import login_refused

# The page loads nothing but our own script and style, and talks only to this server
# (CSP 3 `'self'` includes ws:// and wss:// to the same host).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def _with_policy(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


class ConsoleLoginView(LoginView):
    template_name = "console/login.html"
    redirect_authenticated_user = True
    next_page = reverse_lazy("console:index")

    def get_redirect_url(self) -> str:
        # A `next` back to this page would loop, which Django refuses with a 500: use next_page.
        url = super().get_redirect_url()
        return "" if url and urlsplit(url).path == self.request.path else url

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        # The same bucket as POST /v1/auth/login: a guesser gains nothing by switching door.
        if (wait := login_refused(request)) is not None:
            response = render(
                request, "console/login.html", {"form": self.get_form_class()(request), "throttled": True}, status=429
            )
            response["Retry-After"] = str(wait)
            return _with_policy(response)
        return super().post(request, *args, **kwargs)

    def render_to_response(self, context, **kwargs) -> HttpResponse:
        return _with_policy(super().render_to_response(context, **kwargs))


class ConsoleLogoutView(LogoutView):
    next_page = reverse_lazy("console:login")


@login_required(login_url=reverse_lazy("console:login"))
@ensure_csrf_cookie  # the page's script reads it for X-CSRFToken on writes
def index(request: HttpRequest) -> HttpResponse:
    return _with_policy(render(request, "console/index.html"))
