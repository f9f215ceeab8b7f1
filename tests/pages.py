"""Reading what the console sends back: its tables, elements by data-testid, the records a page links to, CSV
exports. `HTMX` is the header an htmx request carries (in the test client's META form)."""

from __future__ import annotations

import csv
import html as html_lib
import io
import re
import xml.etree.ElementTree as ET

HTMX = {"HTTP_HX_REQUEST": "true"}

_RECORD_LINK = re.compile(r'href="/records/(\d+)/"')


def _cell_text(cell: str) -> str:
    return html_lib.unescape(" ".join(re.sub(r"<[^>]+>", " ", cell).split()))


def table_rows(html: str, testid: str) -> list[list[str]]:
    """The body rows of the table marked data-testid=`testid`, each as its cells' text."""
    table = re.search(rf'<table[^>]*data-testid="{testid}".*?</table>', html, re.S)
    assert table, f"no table {testid!r}"
    body = re.search(r"<tbody>(.*?)</tbody>", table.group(0), re.S).group(1)
    return [[_cell_text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S)]
            for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def row_cells(html: str, testid: str) -> list[str]:
    """The text of the cells of the <tr data-testid=testid>."""
    m = re.search(rf'<tr[^>]*data-testid="{re.escape(testid)}"[^>]*>(.*?)</tr>', html, re.S)
    assert m, f"no row {testid!r}"
    return [_cell_text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", m.group(1), re.S)]


def text_of(html: str, testid: str) -> str:
    m = re.search(rf'data-testid="{re.escape(testid)}"[^>]*>(.*?)<', html, re.S)
    assert m, f"no element {testid!r}"
    return m.group(1).strip()


def linked_record_ids(html: str) -> set[int]:
    return {int(pk) for pk in _RECORD_LINK.findall(html)}


def is_svg(fragment: str) -> bool:
    """A chart the console draws: well-formed XML (or this raises) and an <svg> element."""
    ET.fromstring(str(fragment))
    return str(fragment).startswith("<svg")


def parse_csv(response) -> list[list[str]]:
    """The rows of a CSV export, after checking it is one (type, attachment name)."""
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert re.match(r'attachment; filename="handoff-[\w-]+\.csv"$', response["Content-Disposition"])
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))
