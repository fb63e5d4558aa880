import factory

from orgs.authentication import new_api_key_secret
from orgs.models import ApiKey, Membership, Organization, Role, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user-{n:04d}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    alias = factory.Sequence(lambda n: f"org-{n:06d}")
    name = factory.Sequence(lambda n: f"Organization {n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    org = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.ADMIN


def make_api_key(org: Organization, role: str = "write", created_by: User | None = None, **fields) -> tuple[ApiKey, str]:
    """An API key row and its secret, made the way the service makes them."""
    key, lookup, hashed = new_api_key_secret()
    creator = created_by or UserFactory()
    api_key = ApiKey.objects.create(
        org=org, role=role, lookup=lookup, hashed_key=hashed, created_by=creator, **fields
    )
    return api_key, key
