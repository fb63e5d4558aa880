"""`manage.py serve`: the whole platform in one process (the embedded default).

The ASGI server (daphne) runs in the main thread; a Celery worker on the in-memory
broker and the beat run in threads beside it. Ctrl-C stops the server first, then the
beat, then the worker, so nothing is left half-done.
"""


from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError



class Command(BaseCommand):
    help = "Run the web server, a Celery worker and the beat in one process."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--concurrency", type=int, default=4, help="worker threads")

    def handle(self, *args, host: str, port: int, concurrency: int, **options) -> None:
        if not settings.EMBEDDED:
            raise CommandError(
                "serve runs the embedded default; with REDIS_URL set, run daphne, a worker and beat (see README)."
            )
        call_command("migrate", interactive=False, verbosity=0)
        self._first_start()

        from blobhub.embedded import EmbeddedRuntime

        runtime = EmbeddedRuntime(concurrency=concurrency)
        runtime.start()
        self.stdout.write(f"BlobHub is serving on http://{host}:{port}/ (data in {settings.DATA_DIR})")
        try:
            self._run_web(host, port)
        finally:
            self.stdout.write("Stopping the beat and the worker...")
            runtime.stop()
            self.stdout.write("Stopped.")

    def _first_start(self) -> None:
        from orgs.bootstrap import bootstrap_first_start

        created = bootstrap_first_start()
        if created is None:
            return
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "First start: created an admin user and a demo organization.",
                    f"  sign in:        user '{created.username}'  password '{created.password}'",
                    "  web console:    /console/   (Django admin: /admin/)",
                    f"  organization:   {created.org_alias}",
                    f"  write API key:  {created.api_key}",
                    "  try:           curl -H 'X-API-Key: <key>' http://127.0.0.1:8000/v1/users/me",
                    "These are shown once; keep them.",
                    "",
                ]
            )
        )

    def _run_web(self, host: str, port: int) -> None:
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from blobhub.asgi import application

        Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            signal_handlers=True,
            server_name="blobhub",
        ).run()
