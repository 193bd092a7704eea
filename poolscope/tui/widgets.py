"""Small Textual widgets: a table updated row by row by key, and a chart that draws
only when visible and at most once a second."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from rich.text import Text
from textual.widgets import DataTable, Static
from textual.widgets.data_table import ColumnKey, RowKey


class KeyedTable(DataTable[Text]):
    """A DataTable fed whole row lists but updated in place: cells that changed
    are updated by (row key, column key), new rows added, gone rows removed, and
    the order fixed with ``sort`` only when it changed. Never cleared. Columns
    size to their widest cell now, not to their first values (``_fit``)."""

    def __init__(self, columns: Sequence[str], **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self._columns = list(columns)
        self._cells: dict[str, tuple[Text, ...]] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for c in self._columns:
            self.add_column(c, key=c)

    @property
    def row_keys_in_order(self) -> list[str]:
        return list(self._order)

    @property
    def selected_key(self) -> str | None:
        if not self._order or self.cursor_row < 0 or self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    def sync(self, rows: Sequence[tuple[str, tuple[Text, ...]]]) -> None:
        wanted = [k for k, _ in rows]
        wanted_set = set(wanted)
        selected = self.selected_key
        old_set = set(self._cells)
        for key in old_set - wanted_set:
            self.remove_row(key)
            del self._cells[key]
        changed: set[int] = set()
        for key, cells in rows:
            old = self._cells.get(key)
            if old is None:
                self.add_row(*cells, key=key)
            else:
                for col, (a, b) in enumerate(zip(old, cells, strict=True)):
                    if not _same(a, b):
                        self.update_cell(key, self._columns[col], b)
                        changed.add(col)
                # Keep the objects the table holds (unchanged cells stay the old ones).
                cells = tuple(a if _same(a, b) else b for a, b in zip(old, cells, strict=True))
            self._cells[key] = cells
        # The table's order now: surviving rows as they were, then the new ones.
        current = [k for k in self._order if k in wanted_set]
        current += [k for k in wanted if k not in old_set]
        if current != wanted:
            rank = {key: i for i, key in enumerate(wanted)}
            # DataTable.sort hands the key function cell values only; the first
            # cell objects are ours, so their identity leads back to the row key.
            first = {id(self._cells[k][0]): rank[k] for k in wanted}
            self.sort(self._columns[0], key=lambda cell: first.get(id(cell), 0))
        self._order = wanted
        self._fit(changed)
        if selected is not None and selected in wanted_set:
            idx = wanted.index(selected)
            if idx != self.cursor_row:
                self.move_cursor(row=idx, animate=False)

    def _fit(self, columns: set[int]) -> None:
        """Size each column whose cells changed to its widest cell, so a count that
        grows from 1 to 10,000 is never cut off (a DataTable keeps the width of a
        column's first values). One pass over the column, and at most one re-measure
        by the table: ``update_cell(update_width=True)`` re-measures the whole column
        whenever a cell narrows, too slow to call for every cell of every refresh."""
        for col in columns:
            name = self._columns[col]
            column = self.columns.get(ColumnKey(name))
            if column is None or not self._cells:
                continue
            key, widest = max(
                ((k, cells[col].cell_len) for k, cells in self._cells.items()), key=lambda kw: kw[1]
            )
            if max(widest, column.label.cell_len) != column.content_width:
                self.update_cell(key, name, self._cells[key][col], update_width=True)

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        super()._update_dimensions(new_rows)
        # DataTable caches drawn lines by its update count, which new column widths
        # alone do not change: a header drawn between an update and this (deferred)
        # measure would stay at the old widths, misaligned with its rows.
        self._clear_caches()

    def append(self, rows: Sequence[tuple[str, tuple[Text, ...]]], keep: int) -> None:
        """Append log rows (keys never seen before) and drop the oldest beyond ``keep``."""
        for key, cells in rows:
            if key in self._cells:
                continue
            self.add_row(*cells, key=key)
            self._cells[key] = cells
            self._order.append(key)
        excess = len(self._order) - keep
        if excess > 0:
            for key in self._order[:excess]:
                self.remove_row(key)
                del self._cells[key]
            del self._order[:excess]

    def reset(self) -> None:
        self.clear()
        self._cells.clear()
        self._order.clear()


def _same(a: Text, b: Text) -> bool:
    # rich's Text.__eq__ ignores the base style, and alerts change only the style.
    return a.plain == b.plain and a.style == b.style and a.spans == b.spans


class Chart(Static):
    """A plotext chart as rich Text; redrawn only when shown, at most once a second."""

    def __init__(
        self, draw: Callable[[int, int], Text], min_interval: float = 1.0, **kwargs: object
    ) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self._draw = draw
        self._min_interval = min_interval
        self._last = 0.0
        self._last_size = (0, 0)
        self.draws = 0

    def redraw(self, force: bool = False) -> bool:
        if not self.display or not self.is_on_screen:
            return False
        w, h = self.content_size.width, self.content_size.height
        now = time.monotonic()
        if not force and (w, h) == self._last_size and now - self._last < self._min_interval:
            return False
        self._last = now
        self._last_size = (w, h)
        self.update(self._draw(w, h))
        self.draws += 1
        return True
