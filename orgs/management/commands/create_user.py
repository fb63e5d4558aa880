import sys

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from orgs.models import User


class Command(BaseCommand):
    help = "Create a user; the password is read from stdin (one line), never from the command line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", required=True)
        parser.add_argument("--email", default="")
        parser.add_argument("--superuser", action="store_true")

    def handle(self, *args, username: str, email: str, superuser: bool, **options) -> None:
        user = User(username=username, email=email, is_staff=superuser, is_superuser=superuser)
        try:
            # The rules the admin's user form applies: username validator, uniqueness, email format.
            user.full_clean(exclude=["password"])
        except ValidationError as error:
            raise CommandError(" ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items()))
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise CommandError("Give the password on stdin.")
        try:
            validate_password(password, user)
        except ValidationError as error:
            raise CommandError("password: " + " ".join(error.messages))
        user.set_password(password)
        user.save()
        self.stdout.write(str(user.id))
