"""The one form of tax ids, countries and currencies (apps/canonical/normalise.py)."""

from __future__ import annotations

from importlib import import_module

import pytest
from django.apps import apps as django_apps

from apps.canonical import normalise
from apps.canonical.models import Customer


@pytest.mark.parametrize("given, country, expected", [
    ("DE 811 907 980", "DE", "DE811907980"),
    ("DE811907980", "", "DE811907980"),
    ("de-811.907.980", "DE", "DE811907980"),
    ("811907980", "DE", "DE811907980"),  # the VAT id's country prefix, written without it
    ("GB-123.4567.89", "GB", "GB123456789"),
    ("094 8231 17", "GR", "EL094823117"),  # Greece's VAT prefix is EL
    ("CHE-123.456.789", "CH", "CHE123456789"),
    ("12-3456789", "US", "12-3456789"),  # no prefix in the US format: none is added; its written form is kept
    ("12 345 6789", "US", "12-3456789"),
    ("123456789", "US", "12-3456789"),
    (" 12 / 345 ", "", "12345"),
])
def test_a_tax_id_loses_its_separators_and_gains_its_country_prefix(given, country, expected):
    assert normalise.tax_id(given, country) == expected


def test_two_spellings_of_one_tax_id_are_the_same_id():
    assert normalise.tax_id("DE 811 907 980", "DE") == normalise.tax_id("DE811907980", "DE")
    assert normalise.tax_id("GB-123.4567.89") == normalise.tax_id("GB123456789")


@pytest.mark.parametrize("given, words", [
    ("", "empty"),
    ("   - . ", "empty"),
    ("DE81190798#", "characters other than"),
    ("DE" + "1" * 70, "longer than 64"),
])
def test_a_tax_id_that_cannot_be_normalised_is_refused_never_cut(given, words):
    with pytest.raises(ValueError) as refused:
        normalise.tax_id(given, "DE")
    assert words in str(refused.value)


@pytest.mark.parametrize("given, expected", [
    ("DE", "DE"), ("de", "DE"), ("DEU", "DE"), ("Germany", "DE"), ("germany", "DE"),
    ("United Kingdom", "GB"), ("UK", "GB"), ("United  States", "US"), ("Czech Republic", "CZ"),
    (" Switzerland ", "CH"),
])
def test_a_country_name_or_code_becomes_its_iso_alpha_2_code(given, expected):
    assert normalise.country_code(given) == expected


@pytest.mark.parametrize("given", ["", "Atlantis", "XX", "Deutschland und Österreich"])
def test_a_country_that_cannot_be_recognised_is_refused(given):
    with pytest.raises(ValueError):
        normalise.country_code(given)


def test_a_mapping_keeps_an_unrecognised_country_whole():
    assert normalise.country_or_as_given("Germany") == "DE"
    assert normalise.country_or_as_given(" Atlantis ") == "Atlantis"


@pytest.mark.parametrize("given, expected", [("chf", "CHF"), (" SEK ", "SEK"), ("NOK", "NOK"), ("KWD", "KWD")])
def test_any_iso_4217_currency_is_recognised(given, expected):
    assert normalise.currency_code(given) == expected
    assert normalise.is_currency(given)


@pytest.mark.parametrize("given", ["XYZ", "EURO", "", "XXX", "E"])
def test_a_code_that_is_not_an_iso_4217_currency_is_refused(given):
    with pytest.raises(ValueError) as refused:
        normalise.currency_code(given)
    assert "not an ISO 4217 currency" in str(refused.value)
    assert not normalise.is_currency(given)


@pytest.mark.django_db
def test_the_migration_normalises_stored_tax_ids_and_leaves_what_it_cannot():
    migration = import_module("apps.canonical.migrations.0003_normalise_customer_tax_id")
    spaced = Customer.objects.create(name="Spaced GmbH", tax_id="DE 811 907 980", country="DE")
    bare = Customer.objects.create(name="Bare Inc", tax_id="123456789", country="US")
    odd = Customer.objects.create(name="Odd Ltd", tax_id="12#4", country="GB")
    migration.normalise_tax_ids(django_apps, None)
    assert [Customer.objects.get(pk=c.pk).tax_id for c in (spaced, bare, odd)] == ["DE811907980", "12-3456789", "12#4"]
