//! Fixed-width text tables for the list commands (`hearth ls`, `hearth keys ls`).

/// One column: its title, and its width and side (the last column takes what is left).
pub struct Column {
    pub title: &'static str,
    pub width: usize,
    pub right: bool,
}

impl Column {
    pub const fn left(title: &'static str, width: usize) -> Self {
        Column {
            title,
            width,
            right: false,
        }
    }

    pub const fn right(title: &'static str, width: usize) -> Self {
        Column {
            title,
            width,
            right: true,
        }
    }

    fn cell(&self, text: &str, last: bool) -> String {
        match (last, self.right) {
            (true, _) => text.to_string(),
            (false, true) => format!("{text:>width$}", width = self.width),
            (false, false) => format!("{text:<width$}", width = self.width),
        }
    }
}

/// The header line and one line per row, without a trailing newline.
pub fn render(columns: &[Column], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let line = |cells: Vec<String>| {
        let last = columns.len().saturating_sub(1);
        let padded: Vec<String> = columns
            .iter()
            .zip(&cells)
            .enumerate()
            .map(|(i, (column, text))| column.cell(text, i == last))
            .collect();
        padded.join(" ")
    };
    let header = line(columns.iter().map(|c| c.title.to_string()).collect());
    std::iter::once(header)
        .chain(rows.into_iter().map(line))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_padded_to_their_column_and_the_last_one_is_not() {
        let columns = [
            Column::left("NAME", 6),
            Column::right("SIZE", 6),
            Column::left("WHEN", 4),
        ];
        let text = render(
            columns.as_slice(),
            [vec!["a".into(), "10MB".into(), "today, late".into()]],
        );
        assert_eq!(text, "NAME     SIZE WHEN\na        10MB today, late");
    }
}
