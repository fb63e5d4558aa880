from django.core.management.base import BaseCommand, CommandError
from rest_framework.exceptions import ValidationError

from blobhub.api.errors import ApplicationError
from blobhub.api.serializers import ref_lookup
from orgs import services
from orgs.models import Membership, Organization, Role
from orgs.principal import Principal


class Command(BaseCommand):
    help = "Create an org API key and print the key alone on stdout (it is shown only once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--org", required=True, help="organization id or alias")
        parser.add_argument("--role", required=True, choices=["read", "write"])
        parser.add_argument("--description", default="")

    def handle(self, *args, org: str, role: str, description: str, **options) -> None:
        organization = Organization.objects.filter(**ref_lookup(org)).first()
        if organization is None:
            raise CommandError(f"No organization {org!r}.")
        # The key's creator (what `users/me` answers for it) is the org's first admin.
        admin = (
            Membership.objects.filter(org=organization, role=Role.ADMIN, user__is_active=True)
            .order_by("created_at")
            .select_related("user")
            .first()
        )
        if admin is None:
            raise CommandError(f"Organization {organization.alias!r} has no active admin to own the key.")
        if len(description) > 256:
            raise CommandError("The description is longer than 256 characters.")
        try:
            _, key = services.api_key_create(
                principal=Principal(user=admin.user), org=organization, role=role, description=description
            )
        except (ApplicationError, ValidationError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(key)
