import sys

from django.core.management.base import BaseCommand, CommandError

from orgs.models import User


class Command(BaseCommand):
    help = "Create a user; the password is read from stdin (one line), never from the command line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", required=True)
        parser.add_argument("--email", default="")
        parser.add_argument("--superuser", action="store_true")

    def handle(self, *args, username: str, email: str, superuser: bool, **options) -> None:
        if User.objects.filter(username=username).exists():
            raise CommandError(f"A user named {username!r} exists already.")
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise CommandError("Give the password on stdin.")
        create = User.objects.create_superuser if superuser else User.objects.create_user
        user = create(username=username, email=email, password=password)
        self.stdout.write(str(user.id))
