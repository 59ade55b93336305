"""Django's ORM through `airlock serve` under the example's rules: reads pass, writes wait.

No project scaffold: settings.configure() with one `default` database, the gateway's
`orders` target over psycopg 3, and unmanaged models on the example schema. Django's
own first statements on a connection (its TimeZone set_config among them), ORM
queries, server-side cursors (`iterator()`), atomic blocks with savepoints and the
introspection that `inspectdb` runs all pass with no request held; a create waits for
a DBA.
"""

from __future__ import annotations

import datetime
import decimal
import io
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings

from tests.support.approvals import Background
from tests.support.example_gateway import ExampleGateway

#: Django's settings are the process's: configured once, pointed at the gateway per test.
if not settings.configured:
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "orders"}},
        INSTALLED_APPS=["django.contrib.contenttypes"],
        # Naive datetimes in a zone that is not the server's: Django sets the session's
        # TimeZone on every new connection (`SELECT set_config('TimeZone', ...)`).
        USE_TZ=False,
        TIME_ZONE="Europe/Paris",
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()

from django.core.management import call_command
from django.db import connection, connections, models, transaction
from django.db.models import Count, Q, Sum


class Product(models.Model):  # type: ignore[misc]  # (django has no types)
    name = models.TextField()
    type = models.TextField()
    date = models.DateField(null=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    comment = models.TextField(null=True)
    tags = models.JSONField(null=True)
    created_at = models.DateTimeField()

    class Meta:
        app_label = "shop"
        db_table = "products"
        managed = False


class Order(models.Model):  # type: ignore[misc]
    product = models.ForeignKey(Product, on_delete=models.DO_NOTHING)
    quantity = models.IntegerField()
    status = models.TextField()
    placed_at = models.DateTimeField()

    class Meta:
        app_label = "shop"
        db_table = "orders"
        managed = False


@pytest.fixture
def django_agent(example_gateway: ExampleGateway) -> Iterator[str]:
    """Point Django's default database at the gateway with a new reader's token; yield
    the subject. Django's connections are closed afterwards (so its sessions end)."""
    subject, token = example_gateway.reader("django")
    connect_as(example_gateway, token)
    try:
        yield subject
    finally:
        connections.close_all()


def connect_as(example_gateway: ExampleGateway, token: str) -> None:
    connections.close_all()
    for alias in connections:
        connections[alias].settings_dict.update(
            USER="agent",
            PASSWORD=token,
            HOST="127.0.0.1",
            PORT=str(example_gateway.pg_port),
            OPTIONS={"sslmode": "require"},
        )


def orm_reads() -> dict[str, Any]:
    fruit_named = list(
        Product.objects.filter(name__in=["apple", "pear", "plum"], type="fruit")
        .order_by("id")
        .values_list("name", flat=True)
    )
    fruit_or_cheap = list(
        Product.objects.filter(Q(type="fruit") | Q(price__lt=decimal.Decimal("1.00")))
        .exclude(date__isnull=True)
        .order_by("name")
        .values_list("name", flat=True)
    )
    pending = [
        (order.product.name, order.quantity)
        for order in Order.objects.select_related("product")
        .filter(
            status__in=["pending"],
            placed_at__gte=datetime.datetime(2024, 1, 1),
        )
        .order_by("product__name")
    ]
    by_type = list(
        Order.objects.values("product__type")
        .annotate(orders=Count("id"), quantity=Sum("quantity"))
        .filter(orders__gt=0)
        .order_by("product__type")
        .values_list("product__type", "orders", "quantity")
    )
    return {
        "fruit_named": fruit_named,
        "fruit_or_cheap": fruit_or_cheap,
        "pending": pending,
        "by_type": by_type,
        "colour": list(Product.objects.filter(tags__colour="green").values_list("name", flat=True)),
        "comment contains": Product.objects.filter(comment__icontains="ON").count(),
        "exists": Order.objects.filter(quantity__gte=5).exists(),
        "dates": [d.isoformat() for d in Product.objects.dates("date", "month")],
        # A named server-side cursor (DECLARE ... WITH HOLD) read in chunks.
        "iterated": [p.name for p in Product.objects.order_by("id").iterator(chunk_size=2)],
    }


EXPECTED = {
    "fruit_named": ["apple", "pear"],
    "fruit_or_cheap": ["apple", "leek", "pear"],
    "pending": [("apple", 5), ("pear", 1)],
    "by_type": [("bakery", 1, 2), ("fruit", 3, 9)],
    "colour": ["pear"],
    "comment contains": 1,
    "exists": True,
    "dates": ["2024-01-01", "2024-02-01"],
    "iterated": ["apple", "pear", "leek", "bread"],
}


def test_django_orm_reads_pass(example_gateway: ExampleGateway, django_agent: str) -> None:
    assert orm_reads() == EXPECTED
    # A read-only transaction, with a nested atomic block (a savepoint) inside it.
    with transaction.atomic():
        assert Product.objects.count() == 4
        with transaction.atomic():
            assert Order.objects.filter(status="shipped").count() == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('TimeZone')")
        assert cursor.fetchone() == ("Europe/Paris",)
    connections.close_all()
    example_gateway.assert_reads_passed(django_agent)


def test_django_introspection_and_inspectdb_pass(
    example_gateway: ExampleGateway, django_agent: str
) -> None:
    introspection = connection.introspection
    with connection.cursor() as cursor:
        tables = introspection.get_table_list(cursor)
        columns = [c.name for c in introspection.get_table_description(cursor, "products")]
        relations = introspection.get_relations(cursor, "orders")
        constraints = introspection.get_constraints(cursor, "orders")
        sequences = introspection.get_sequences(cursor, "products")
    assert sorted((t.name, t.type) for t in tables) == [
        ("order_totals", "v"),
        ("orders", "t"),
        ("products", "t"),
    ]
    assert columns == ["id", "name", "type", "date", "price", "comment", "tags", "created_at"]
    assert relations == {"product_id": ("id", "products")}
    assert any(c["primary_key"] and c["columns"] == ["id"] for c in constraints.values())
    assert [s["column"] for s in sequences] == ["id"]
    models_py = io.StringIO()
    call_command("inspectdb", "products", "orders", stdout=models_py)
    assert "class Products(models.Model):" in models_py.getvalue()
    assert "product = models.ForeignKey(Products, models.DO_NOTHING)" in models_py.getvalue()
    connections.close_all()
    example_gateway.assert_reads_passed(django_agent)


def test_django_create_is_held_for_a_dba(example_gateway: ExampleGateway) -> None:
    subject = "writer-django"
    connect_as(example_gateway, example_gateway.token(subject))

    def create() -> object:
        try:
            return Product.objects.create(
                name="plum", type="fruit", price=decimal.Decimal("2.00"),
                created_at=datetime.datetime(2024, 6, 1),
            )  # fmt: skip
        finally:
            connections.close_all()

    agent = Background(create)
    request = example_gateway.pending_request(subject)
    assert request["class"] == "write"
    assert request["sql"].startswith('INSERT INTO "products"')
    example_gateway.deny(request["id"], "no plums")
    outcome = agent.result()
    assert isinstance(outcome, django.db.Error), outcome
    assert "no plums" in str(outcome)
    assert example_gateway.pg_rows("SELECT count(*) FROM products WHERE name = 'plum'") == [(0,)]
