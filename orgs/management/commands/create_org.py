from django.core.management.base import BaseCommand, CommandError
from rest_framework.exceptions import ValidationError

from blobhub.api.errors import ApplicationError, validation_details
from blobhub.api.serializers import parse
from orgs import services
from orgs.api.serializers import OrganizationCreateIn
from orgs.models import User
from orgs.principal import Principal


class Command(BaseCommand):
    help = "Create an organization owned (as admin) by an existing user; prints its id."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--alias", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner", required=True, help="username of the first admin")

    def handle(self, *args, alias: str, name: str, owner: str, **options) -> None:
        user = User.objects.filter(username=owner, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {owner!r}.")
        try:
            data = parse(OrganizationCreateIn, {"alias": alias, "name": name})
            org = services.organization_create(principal=Principal(user=user), **data)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        except ValidationError as exc:
            problems = validation_details(exc.detail)
            raise CommandError("; ".join(f"{p['path']}: {p['message']}" for p in problems)) from None
        self.stdout.write(str(org.id))
