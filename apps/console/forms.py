"""The fix form: canonical fields of a held record, as choices where Handoff knows the valid values."""

from __future__ import annotations

from django import forms

from apps.canonical.models import CURRENCIES, Engagement, LegalEntity, PaymentTerms
from apps.canonical.services import customer_find_duplicates
from apps.sync.payload import get_path
from apps.sync.workflows.catalog import field_label


def fix_choices(path: str) -> list[tuple[str, str]] | None:
    """The valid values of a fix field where Handoff knows them (None: free text), for the record's fix form and
    the bulk fix form alike."""
    if path == "legal_entity":
        return [(le.code, str(le)) for le in LegalEntity.objects.filter(active=True)]
    if path == "billing_terms":
        return [(t.code, f"{t.code} — {t.name}") for t in PaymentTerms.objects.all()]
    if path == "currency":
        return [(c, c) for c in CURRENCIES]
    if path == "contract_type":
        return list(Engagement.ContractType.choices)
    return None


def _field_name(path: str) -> str:
    return path.replace(".", "__")


class FixForm(forms.Form):
    version = forms.IntegerField(widget=forms.HiddenInput)
    from_start = forms.BooleanField(required=False, label="Re-run from the start (default: from the failed stage)")
    reason = forms.CharField(required=False, max_length=500, label="Note for the audit trail")

    def __init__(self, *args, record, fix_fields: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.record = record
        self.paths = fix_fields
        payload = record.current_payload
        for path in fix_fields:
            label = field_label(path).capitalize()
            initial = get_path(payload, path) or ""
            name = _field_name(path)
            choices = fix_choices(path)
            if choices is not None:
                choices = [("", "—")] + choices
                if initial and initial not in dict(choices):
                    choices.append((initial, f"{initial} (unknown)"))
                field = forms.ChoiceField(choices=choices, required=False)
            elif path == "duplicate_resolution":
                account = payload.get("account") or {}
                dups = customer_find_duplicates(name=account.get("name", ""), tax_id=account.get("tax_id", ""),
                                                country=account.get("country", ""))[:5]
                choices = [("", "— not decided —"), ("new", "It is a different customer: create a new one")]
                choices += [(f"link:{c.pk}", f"Same customer: link to #{c.pk} {c.name} ({c.tax_id})") for c in dups]
                if initial and initial not in dict(choices):
                    choices.append((initial, initial))
                field = forms.ChoiceField(choices=choices, required=False)
            else:
                field = forms.CharField(required=False, max_length=300)
            field.label = label
            field.initial = initial
            field.widget.attrs["data-path"] = path
            if path in record.fault_fields:
                field.widget.attrs["class"] = "at-fault"
                field.widget.attrs["aria-invalid"] = "true"
            self.fields[name] = field
        self.order_fields([_field_name(p) for p in fix_fields] + ["from_start", "reason"])

    def changes(self) -> dict:
        return {p: self.cleaned_data.get(_field_name(p), "") or "" for p in self.paths}

    def fault_bound_fields(self):
        return [self[_field_name(p)] for p in self.paths]
