//! Fixed-width text tables for the list commands (`hearth ls`, `hearth keys ls`).

/// One column of a table of `T`s: its title, width and side (the last column takes
/// what is left), and how a row shows its cell.
pub struct Column<T> {
    title: &'static str,
    width: usize,
    right: bool,
    cell: fn(&T) -> String,
}

impl<T> Column<T> {
    pub const fn left(title: &'static str, width: usize, cell: fn(&T) -> String) -> Self {
        Column {
            title,
            width,
            right: false,
            cell,
        }
    }

    pub const fn right(title: &'static str, width: usize, cell: fn(&T) -> String) -> Self {
        Column {
            title,
            width,
            right: true,
            cell,
        }
    }

    fn pad(&self, text: &str, last: bool) -> String {
        match (last, self.right) {
            (true, _) => text.to_string(),
            (false, true) => format!("{text:>width$}", width = self.width),
            (false, false) => format!("{text:<width$}", width = self.width),
        }
    }
}

/// The header line and one line per item, or `empty` (what to do first) when there
/// are no items.
pub fn render<T>(columns: &[Column<T>], items: &[T], empty: &str) -> String {
    if items.is_empty() {
        return empty.to_string();
    }
    let last = columns.len().saturating_sub(1);
    let line = |text: &dyn Fn(&Column<T>) -> String| {
        let cells: Vec<String> = (columns.iter().enumerate())
            .map(|(i, column)| column.pad(&text(column), i == last))
            .collect();
        cells.join(" ")
    };
    let header = line(&|column| column.title.to_string());
    let rows = items.iter().map(|item| line(&|column| (column.cell)(item)));
    std::iter::once(header)
        .chain(rows)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_padded_to_their_column_and_the_last_one_is_not() {
        let columns: [Column<(&str, u64)>; 3] = [
            Column::left("NAME", 6, |r| r.0.to_string()),
            Column::right("SIZE", 6, |r| format!("{}MB", r.1)),
            Column::left("WHEN", 4, |_| "today, late".into()),
        ];
        let text = render(&columns, &[("a", 10)], "none");
        assert_eq!(text, "NAME     SIZE WHEN\na        10MB today, late");
        assert_eq!(render(&columns, &[], "none yet"), "none yet");
    }
}
